// Loads shared by concurrent callers: the prediction and generation services read each adapter once.

/** `load()` once per key: concurrent first uses share it, and a failed load is forgotten so the next use retries. */
export function loadOnce<T>(loads: Map<string, Promise<T>>, key: string, load: () => Promise<T>): Promise<T> {
  let loading = loads.get(key);
  if (!loading) {
    loading = load();
    loads.set(key, loading);
    loading.catch(() => loads.delete(key));
  }
  return loading;
}
