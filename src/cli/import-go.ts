/** `ncps import-go`: a Go ncps's narinfos, NARs and signing key brought into this ncps. The Go
 * side is named with the Go ncps's own flags behind `from-` (its database URL, its local
 * directory or S3 bucket, its key file); this ncps's side with its usual options, as for
 * `serve`. The Go database and storage are only read. */
import { mkdir, stat } from "node:fs/promises";
import { HotNarInfos } from "../cache/hot-narinfos.ts";
import { adoptSigningKey, loadSigningKey } from "../cache/signing-key.ts";
import { StoredNars } from "../cache/stored-nars.ts";
import { removeStaleTempFiles } from "../cache/temp-files.ts";
import { storageChoice } from "../compose.ts";
import { ConfigError } from "../config/errors.ts";
import type { Config } from "../config/options.ts";
import type { MetadataStore } from "../db/metadata-store.ts";
import { openMetadataStore, poolSettings, requireCurrentSchema } from "../db/open.ts";
import { errnoReason } from "../errors.ts";
import { GoDatabase } from "../db/go-database.ts";
import { GO_SECRET_KEY_KEY } from "../goimport/go-storage.ts";
import { importGoNcps, type ImportReport } from "../goimport/import.ts";
import { NixFormatError } from "../nix/errors.ts";
import { formatPublicKey, parseSecretKey, toPublicKey, type SecretKey } from "../nix/signature.ts";
import { StartupError, startupStep } from "../startup.ts";
import type { BlobStore } from "../storage/blob-store.ts";
import { LocalBlobStore } from "../storage/local.ts";
import { openBlobStore } from "../storage/open.ts";
import { createLogger, type Logger } from "../telemetry/logger.ts";
import { within } from "../within.ts";
import { progressDisplay } from "./progress.ts";

interface Flags {
  databaseUrl: string;
  store: { local: string } | { s3: { bucket: string; endpoint: string; region?: string; accessKeyId?: string; secretAccessKey?: string; forcePathStyle?: boolean } };
  secretKeyPath?: string;
  keepSigningKey: boolean;
}

/** What stops the run short (an interrupt): the one line the CLI prints, exit status 1. */
class Interrupted extends Error {
  override name = "Interrupted";
  readonly userFacing = true;
}

export async function runImportGo(config: Config, values: Record<string, unknown>, out: (text: string) => void = (t) => process.stdout.write(t)): Promise<void> {
  const flags = parseFlags(values);
  const logger = createLogger(config.logLevel);
  const goDb = await startupStep("Go ncps database", () => GoDatabase.open(flags.databaseUrl));
  try {
    const goStore = await startupStep("Go ncps storage", () => openGoStore(flags.store));
    await startupStep("temp directory", async () => {
      await mkdir(config.cacheTempPath, { recursive: true, mode: 0o700 });
      await removeStaleTempFiles(config.cacheTempPath, logger);
    });
    const store = await startupStep("storage", () => openBlobStore(storageChoice(config)));
    const pool = poolSettings(config);
    const db = await startupStep("database", () => openMetadataStore(config.cacheDatabaseUrl, { migrate: config.cacheDatabaseAutoMigrate, pool }));
    try {
      await requireCurrentSchema(db);
      const signingKey = await startupStep("signing key", () => signingKeyFor(config, flags, goDb, goStore, db, logger));
      let stop = false;
      let exiting: Promise<never> | null = null;
      const interrupt = () => {
        if (!stop) {
          stop = true;
          logger.warn("interrupted: finishing the narinfos under way (interrupt again to stop at once)");
          return;
        }
        // A second interrupt: now (what is committed is consistent), once both databases are
        // closed, so their servers see the sessions end rather than the connections drop.
        exiting ??= closeWithin(CLOSE_ON_EXIT_MS, [db, goDb]).then(() => process.exit(130));
      };
      process.on("SIGINT", interrupt);
      process.on("SIGTERM", interrupt);
      const tty = process.stderr.isTTY === true;
      const bar = progressDisplay(tty, "import-go");
      let report: ImportReport;
      try {
        report = await importGoNcps({
          goDb,
          goStore,
          db,
          nars: new StoredNars({ db, store, hot: new HotNarInfos(), logger, tempDir: config.cacheTempPath }),
          signingKey: config.cacheSignNarinfo ? signingKey : null,
          tempDir: config.cacheTempPath,
          acceptUnverifiedCompression: config.cacheAcceptUnverifiedCompression,
          logger: tty ? createLogger(config.logLevel, {}, (line) => {
            bar.end();
            process.stderr.write(line);
          }) : logger,
          stopped: () => stop,
          progress: (p) => bar.update({ label: "importing narinfos", done: p.done, total: p.total }),
        });
      } finally {
        // the closed pools fail the import under way: the exit is the outcome, not that failure
        if (exiting) await exiting;
        bar.end();
        process.off("SIGINT", interrupt);
        process.off("SIGTERM", interrupt);
      }
      out(render(report, signingKey));
      logger.info("import-go finished", { total: report.total, imported: report.imported, present: report.present, skipped: report.skipped, bytes: report.bytes, interrupted: report.interrupted });
      if (report.interrupted) {
        throw new Interrupted(`interrupted after ${report.imported + report.present + report.skipped} of ${report.total} narinfos: run the same command again to import the rest`);
      }
    } finally {
      await db.close();
    }
  } finally {
    await goDb.close();
  }
}

/** How long a second interrupt waits for the databases to close before it exits anyway: idle
 * connections close at once, a query still running is given this long, then dropped. */
const CLOSE_ON_EXIT_MS = 2_000;

async function closeWithin(ms: number, databases: { close(): Promise<void> }[]): Promise<void> {
  await within(ms, Promise.allSettled(databases.map((d) => d.close())));
}

function parseFlags(values: Record<string, unknown>): Flags {
  const str = (name: string) => (typeof values[name] === "string" && values[name] !== "" ? (values[name] as string) : undefined);
  const databaseUrl = str("from-cache-database-url");
  if (!databaseUrl) throw new ConfigError("import-go needs --from-cache-database-url: the Go ncps's database");
  const local = str("from-cache-storage-local");
  const bucket = str("from-cache-storage-s3-bucket");
  if (local && bucket) throw new ConfigError("--from-cache-storage-local and --from-cache-storage-s3-bucket are both set: the Go ncps used one of them");
  if (!local && !bucket) throw new ConfigError("import-go needs the Go ncps's storage: --from-cache-storage-local or --from-cache-storage-s3-bucket");
  const base = { secretKeyPath: str("from-cache-secret-key-path"), keepSigningKey: values["keep-signing-key"] === true };
  if (local) return { databaseUrl, store: { local }, ...base };
  let endpoint = str("from-cache-storage-s3-endpoint");
  if (!endpoint) throw new ConfigError("the Go ncps's S3 storage needs --from-cache-storage-s3-endpoint");
  // both keys, or neither: then the AWS chain's, as serve takes them
  const accessKeyId = str("from-cache-storage-s3-access-key-id");
  const secretAccessKey = str("from-cache-storage-s3-secret-access-key");
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    const missing = accessKeyId === undefined ? "access-key-id" : "secret-access-key";
    throw new ConfigError(`the Go ncps's S3 storage needs --from-cache-storage-s3-${missing} too (or neither key, to take credentials from the AWS chain: environment, profile, role)`);
  }
  // the Go ncps takes a bare host and --cache-storage-s3-use-ssl (default true)
  if (!/^https?:\/\//i.test(endpoint)) endpoint = `${values["from-cache-storage-s3-use-ssl"] === false ? "http" : "https"}://${endpoint}`;
  const region = str("from-cache-storage-s3-region");
  return {
    databaseUrl,
    store: {
      s3: {
        bucket: bucket!,
        endpoint,
        ...(region ? { region } : {}),
        ...(accessKeyId && secretAccessKey ? { accessKeyId, secretAccessKey } : {}),
        forcePathStyle: values["from-cache-storage-s3-force-path-style"] === true,
      },
    },
    ...base,
  };
}

/** The Go storage, opened to be read: no directory created, no temp file tidied, nothing
 * written (a local store's check() would do all three). */
async function openGoStore(choice: Flags["store"]): Promise<BlobStore> {
  if ("local" in choice) {
    const st = await stat(choice.local).catch(() => null);
    if (!st?.isDirectory()) throw new Error(`${choice.local} is not a directory`);
    return new LocalBlobStore(choice.local);
  }
  const { S3BlobStore } = await import("../storage/s3.ts");
  const store = new S3BlobStore(choice.s3);
  await store.check(); // a HEAD of the bucket: reads nothing, writes nothing
  return store;
}

/** The Go ncps's signing key, where the Go ncps looks for it, in its order: the key file it
 * was given, its database (v0.6 on), its storage (before v0.6). Null when none is there. */
async function goSigningKey(flags: Flags, goDb: GoDatabase, goStore: BlobStore): Promise<{ key: SecretKey; from: string } | null> {
  const parse = (text: string, from: string) => {
    try {
      return { key: parseSecretKey(text), from };
    } catch (err) {
      if (err instanceof NixFormatError) throw new Error(`the Go ncps's key in ${from}: ${err.message}`);
      throw err;
    }
  };
  if (flags.secretKeyPath) {
    let text: string;
    try {
      text = await Bun.file(flags.secretKeyPath).text();
    } catch (err) {
      throw new Error(`cannot read --from-cache-secret-key-path ${flags.secretKeyPath}: ${errnoReason(err)}`);
    }
    return parse(text, flags.secretKeyPath);
  }
  const inDb = await goDb.secretKey();
  if (inDb !== null) return parse(inDb, "its database");
  const inStore = await goStore.get(GO_SECRET_KEY_KEY);
  if (inStore) return parse(await new Response(inStore.body).text(), `its storage (${GO_SECRET_KEY_KEY})`);
  return null;
}

/** The key the imported narinfos are signed with: the Go ncps's, adopted by this ncps. When
 * this ncps already has another, nothing is changed and the run stops, unless
 * --keep-signing-key says to sign with this ncps's own. */
async function signingKeyFor(config: Config, flags: Flags, goDb: GoDatabase, goStore: BlobStore, db: MetadataStore, logger: Logger): Promise<SecretKey> {
  const go = await goSigningKey(flags, goDb, goStore);
  const own = () => loadSigningKey(db, { path: config.cacheSecretKeyPath, hostname: config.cacheHostname });
  if (!go) {
    if (!flags.keepSigningKey) {
      throw new StartupError(
        "the Go ncps's signing key was found neither in its database nor in its storage: give its key file with --from-cache-secret-key-path, or pass --keep-signing-key to sign with this ncps's own key",
      );
    }
    const key = await own();
    logger.warn("the Go ncps's signing key was not found: imported narinfos are signed with this ncps's key", { publicKey: formatPublicKey(toPublicKey(key)) });
    return key;
  }
  if (flags.keepSigningKey) {
    const key = await own();
    logger.info("signing with this ncps's own key (--keep-signing-key)", { publicKey: formatPublicKey(toPublicKey(key)), goPublicKey: formatPublicKey(toPublicKey(go.key)) });
    return key;
  }
  const current = await adoptSigningKey(db, go.key, { path: config.cacheSecretKeyPath });
  const goPublic = formatPublicKey(toPublicKey(go.key));
  const currentPublic = formatPublicKey(toPublicKey(current));
  if (currentPublic !== goPublic) {
    const where = config.cacheSecretKeyPath ? `the key in --cache-secret-key-path ${config.cacheSecretKeyPath}` : "a key of its own (in its database)";
    throw new StartupError(
      `this ncps already signs with ${where} (${currentPublic}), not the Go ncps's (${goPublic}): nothing was imported. Start from an empty database${config.cacheSecretKeyPath ? " or point --cache-secret-key-path at the Go ncps's key" : ""}, or pass --keep-signing-key to sign the imported narinfos with this ncps's key (clients must then trust it)`,
    );
  }
  logger.info("signing with the Go ncps's key", { publicKey: goPublic, from: go.from });
  return current;
}

function render(report: ImportReport, key: SecretKey): string {
  const lines: string[] = [];
  if (report.skipped > 0) {
    lines.push("not imported:");
    for (const s of report.firstSkipped) lines.push(`  ${s.storePath ?? s.hash}: ${s.reason}`);
    if (report.skipped > report.firstSkipped.length) lines.push(`  ... and ${report.skipped - report.firstSkipped.length} more (each in the log)`);
    lines.push("");
  }
  lines.push(`narinfos in the Go ncps  ${report.total}`);
  lines.push(`imported                 ${report.imported} (${report.bytes} bytes of NARs copied and verified)`);
  lines.push(`already here             ${report.present}`);
  lines.push(`not imported             ${report.skipped}`);
  lines.push(`pins                     ${report.pins}${report.pinsSkipped.length > 0 ? ` (${report.pinsSkipped.length} not imported: their narinfo was not)` : ""}`);
  lines.push(`signing key              ${formatPublicKey(toPublicKey(key))}`);
  if (report.interrupted) lines.push("\ninterrupted: run the same command again to import the rest");
  return `${lines.join("\n")}\n`;
}
