import express from 'express';

/**
 * Express's hello world: the baseline a cached search is measured against.
 * Started like ragworks (`node --import tsx`, the same Node and loader) and
 * driven by the same client over the same connections; it answers every
 * request, the benchmark's POST /api/search included, without reading it.
 */
const app = express();
app.use((_req, res) => {
  res.send('Hello World!');
});
app.listen(Number(process.env.PORT), process.env.HOST ?? '127.0.0.1');
