// What the bundles take from undici: the exports src/client/http.ts uses (Agent, request,
// Dispatcher), put together as undici's own index.js does. That index also loads fetch,
// WebSocket, cookies, mocks and caches, and reads globalThis.Headers, which makes node load its
// own copy of undici: ~40 ms of every start. scripts/build.mjs resolves `undici` here; the
// sources (tsx) use the package as is. Keep `request` in step with undici's index.js.
"use strict";
const Dispatcher = require("undici/lib/dispatcher/dispatcher");
const Agent = require("undici/lib/dispatcher/agent");
const api = require("undici/lib/api");
const util = require("undici/lib/core/util");
const { InvalidArgumentError } = require("undici/lib/core/errors");
const { getGlobalDispatcher } = require("undici/lib/global");

Object.assign(Dispatcher.prototype, api);

// undici/index.js makeDispatcher, as of undici 7.30
function makeDispatcher(fn) {
  return (url, opts, handler) => {
    if (typeof opts === "function") {
      handler = opts;
      opts = null;
    }
    if (!url || (typeof url !== "string" && typeof url !== "object" && !(url instanceof URL))) {
      throw new InvalidArgumentError("invalid url");
    }
    if (opts != null && typeof opts !== "object") {
      throw new InvalidArgumentError("invalid opts");
    }
    if (opts && opts.path != null) {
      if (typeof opts.path !== "string") {
        throw new InvalidArgumentError("invalid opts.path");
      }
      let path = opts.path;
      if (!opts.path.startsWith("/")) {
        path = `/${path}`;
      }
      url = new URL(util.parseOrigin(url).origin + path);
    } else {
      if (!opts) {
        opts = typeof url === "object" ? url : {};
      }
      url = util.parseURL(url);
    }
    const { agent, dispatcher = getGlobalDispatcher() } = opts;
    if (agent) {
      throw new InvalidArgumentError("unsupported opts.agent. Did you mean opts.client?");
    }
    return fn.call(dispatcher, {
      ...opts,
      origin: url.origin,
      path: url.search ? `${url.pathname}${url.search}` : url.pathname,
      method: opts.method || (opts.body ? "PUT" : "GET"),
    }, handler);
  };
}

module.exports.Dispatcher = Dispatcher;
module.exports.Agent = Agent;
module.exports.request = makeDispatcher(api.request);
