import { Elysia } from "elysia";

export function healthRoutes() {
  const ok = () => new Response("ok\n", { headers: { "content-type": "text/plain" } });
  return new Elysia().get("/healthz", ok);
}
