// How the dashboard talks to the API: the key lives in sessionStorage (gone with the tab) and
// travels only as the Bearer header, never in a URL. That is why event streams use fetch() with
// a streaming body reader rather than EventSource, which cannot send headers, and why uploads use
// XMLHttpRequest (fetch reports no upload progress).

const KEY_ITEM = "lora.apiKey";

export const session = {
  key: () => sessionStorage.getItem(KEY_ITEM),
  signIn: (key) => sessionStorage.setItem(KEY_ITEM, key),
  signOut: () => sessionStorage.removeItem(KEY_ITEM),
};

/** An API error answer ({error: {code, message}}), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

const authHeaders = (key = session.key()) => ({ authorization: `Bearer ${key}` });

async function failure(response) {
  const body = await response.json().catch(() => undefined);
  const error = body?.error;
  return new ApiError(response.status, error?.code ?? "http_" + response.status, error?.message ?? `${response.status} ${response.statusText}`, error?.details);
}

async function send(path, { method = "GET", body, key, signal, accept } = {}) {
  const headers = { ...authHeaders(key) };
  if (accept) headers.accept = accept;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", `the API did not answer (${error.message})`);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

/** JSON of a request; `key` checks a key before it is stored. */
export async function api(path, options) {
  const response = await send(path, options);
  return response.status === 204 ? undefined : response.json();
}

/** A response body as a Blob (downloads, charts). */
export async function blob(path, options) {
  return (await send(path, options)).blob();
}

/** Saves an authenticated download under `fileName` through a temporary object URL. */
export async function saveDownload(path, fileName) {
  const url = URL.createObjectURL(await blob(path));
  const link = Object.assign(document.createElement("a"), { href: url, download: fileName });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Uploads a file as multipart form data, reporting progress as a fraction 0..1. */
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", path);
    request.setRequestHeader("authorization", authHeaders().authorization);
    request.responseType = "json";
    request.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
    request.onload = () => {
      const error = request.response?.error;
      if (request.status >= 200 && request.status < 300) resolve(request.response);
      else reject(new ApiError(request.status, error?.code ?? "http_" + request.status, error?.message ?? `upload failed (${request.status})`, error?.details));
    };
    request.onerror = () => reject(new ApiError(0, "network", "the upload did not reach the API"));
    const form = new FormData();
    form.append("file", file, file.name);
    request.send(form);
  });
}

/**
 * Follows a job's Server-Sent Events until its `end` event or `signal` aborts, calling `onEvent`
 * with each event's data and `onEnd` with the end's. A dropped connection is reopened after the
 * last event seen (`after`), so no event is shown twice or missed.
 */
export async function followEvents(jobId, { onEvent, onEnd, signal }) {
  let after = "0";
  while (!signal.aborted) {
    let response;
    try {
      response = await send(`/v1/jobs/${jobId}/events?after=${after}`, { signal, accept: "text/event-stream" });
    } catch (error) {
      if (error.name === "AbortError") return;
      if (error.status >= 400 && error.status < 500) throw error;
      await new Promise((resolve) => setTimeout(resolve, 2000));
      continue;
    }
    try {
      for await (const message of serverSentEvents(response.body)) {
        if (message.event === "end") return onEnd(JSON.parse(message.data));
        const event = JSON.parse(message.data);
        after = event.id;
        onEvent(event);
      }
    } catch (error) {
      if (error.name === "AbortError") return;
    }
  }
}

async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let boundary;
    while ((boundary = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary + 2);
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (data !== undefined) yield { event: /^event: (.*)$/m.exec(block)?.[1], data };
    }
  }
}
