/** nginx serving a directory as a static binary cache: the speed the benchmarks compare with.
 * Each entry of `servers` is one listening port; `extra` goes into its server block (e.g.
 * `limit_rate 125m;`). Resolves once every port answers; `stop` ends nginx. */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { freePort } from "../test/helpers/ports.ts";

export interface Nginx {
  urls: string[];
  /** the master's and its workers' process ids (for CPU accounting) */
  pids: number[];
  stop(): Promise<void>;
}

export async function startNginx(work: string, root: string, servers: { extra?: string }[] = [{}]): Promise<Nginx> {
  await Bun.$`chmod -R a+rX ${work}`.quiet(); // nginx workers run as another user
  const ports = await Promise.all(servers.map(() => freePort()));
  const blocks = servers.map((s, i) => `  server { listen 127.0.0.1:${ports[i]}; root ${root}; ${s.extra ?? ""} }`).join("\n");
  await writeFile(
    join(work, "nginx.conf"),
    `daemon off;
worker_processes 2;
pid ${work}/nginx.pid;
error_log ${work}/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 100000;
  types { text/x-nix-narinfo narinfo; application/x-nix-nar nar; }
  client_body_temp_path ${work}/nginx-tmp; proxy_temp_path ${work}/nginx-tmp;
  fastcgi_temp_path ${work}/nginx-tmp; uwsgi_temp_path ${work}/nginx-tmp; scgi_temp_path ${work}/nginx-tmp;
${blocks}
}
`,
  );
  const nginx = Bun.spawn(["nginx", "-c", join(work, "nginx.conf"), "-e", join(work, "nginx-error.log")], { stderr: "pipe" });
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  const stop = async () => {
    nginx.kill();
    await nginx.exited;
  };
  for (const url of urls) {
    let up = false;
    for (let i = 0; i < 50 && !up; i++) {
      up = await fetch(`${url}/nix-cache-info`).then((r) => r.ok, () => false);
      if (!up) await Bun.sleep(100);
    }
    if (!up) {
      await stop();
      throw new Error(`nginx did not start: ${await Bun.file(join(work, "nginx-error.log")).text().catch(() => "")}`);
    }
  }
  const children = await Bun.file(`/proc/${nginx.pid}/task/${nginx.pid}/children`).text();
  return { urls, pids: [nginx.pid, ...children.split(" ").filter(Boolean).map(Number)], stop };
}
