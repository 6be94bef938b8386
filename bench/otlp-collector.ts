/** The OTLP collector the benchmarks export to, in a process of its own under SCHED_IDLE
 * (bench/otlp-collector-process.ts). */
import { join } from "node:path";

export interface CollectorProcess {
  url: string;
  spans(): Promise<number>;
  stop(): Promise<void>;
}

/** On `cpus` (a taskset list) when given. */
export async function startCollectorProcess(cpus: string | undefined): Promise<CollectorProcess> {
  const pin = cpus === undefined ? [] : ["taskset", "-c", cpus];
  const proc = Bun.spawn([...pin, "chrt", "--idle", "0", "bun", join(import.meta.dir, "otlp-collector-process.ts")], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  const lines = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const nextLine = async (): Promise<string> => {
    for (;;) {
      const nl = buffered.indexOf("\n");
      if (nl >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        return line;
      }
      const { done, value } = await lines.read();
      if (done) throw new Error("the OTLP collector process ended");
      buffered += value;
    }
  };
  const url = await nextLine();
  return {
    url,
    async spans() {
      proc.stdin.write("spans\n");
      await proc.stdin.flush();
      return Number(await nextLine());
    },
    async stop() {
      await proc.stdin.end();
      await proc.exited;
    },
  };
}

