// Small helpers to build the dashboard's DOM without innerHTML (so no API text is ever parsed as
// markup) and to format what the API returns.

/** h("a", {href: "#/x", class: "y"}, "text", child, ...): an element; `on*` attributes add listeners. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat().filter((child) => child !== undefined && child !== null && child !== false));
  return element;
}

/**
 * A table with a caption: `columns` are {label, value(row) → text or node, number?}; an empty
 * `rows` shows `empty` instead.
 */
export function table(caption, columns, rows, empty = "nothing yet") {
  if (rows.length === 0) return h("p", { class: "muted" }, empty);
  return h(
    "table",
    {},
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, columns.map((column) => h("th", { scope: "col", class: column.number ? "number" : undefined }, column.label)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((column) => h("td", { class: column.number ? "number" : undefined }, column.value(row) ?? ""))))),
  );
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error.code ? `${error.message} (${error.code})` : String(error.message ?? error));
}

export const formatTime = (iso) => (iso ? new Date(iso).toLocaleString() : "");

export function formatDuration(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "";
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

export function formatNumber(value) {
  if (typeof value !== "number") return value === undefined || value === null ? "" : String(value);
  return Number.isInteger(value) ? String(value) : value.toFixed(4);
}

export function formatBytes(bytes) {
  if (typeof bytes !== "number") return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let unit = 0;
  while (bytes >= 1024 && unit < units.length - 1) (bytes /= 1024), (unit += 1);
  return `${unit === 0 ? bytes : bytes.toFixed(1)} ${units[unit]}`;
}

export const badge = (status) => h("span", { class: `badge ${status}` }, status);

/** Announces a short message to screen readers (the page's polite live region). */
export function announce(message) {
  document.getElementById("status").textContent = message;
}
