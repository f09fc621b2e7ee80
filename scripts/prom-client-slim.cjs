// What the bundles take from prom-client: the exports src/server/http/metrics.ts and
// src/controller/metrics.ts use. prom-client's index.js also loads, at load, the Pushgateway,
// the cluster aggregator (node:cluster), Summary (and its t-digest) and the ~15 modules of the
// default metrics (node:v8 among them): evaluated by every start, `deltaci run`'s included.
// scripts/build.mjs resolves `prom-client` here; the sources (tsx) use the package as is. The
// default metrics load at their first use (a controller serving /metrics).
"use strict";
exports.Registry = require("prom-client/lib/registry");
exports.Counter = require("prom-client/lib/counter");
exports.Gauge = require("prom-client/lib/gauge");
exports.Histogram = require("prom-client/lib/histogram");
exports.collectDefaultMetrics = (...args) => require("prom-client/lib/defaultMetrics")(...args);
