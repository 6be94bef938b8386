/** GET /metrics: every instrument in the Prometheus text format (exposition 0.0.4). Open like
 * /healthz, as in the Go ncps: it carries counts, never a key, token or path. */
export const getMetrics = (metricsText: () => Promise<string>) => async () =>
  new Response(await metricsText(), { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } });
