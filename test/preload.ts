/** Loaded before every test file (bunfig.toml). Tests here talk to real databases, Redis,
 * s3rver and spawned processes on a 2-core machine shared with the servers they test: bun's
 * default 5 s per test was too short under load (CI timeouts in the database contract and CLI
 * tests). A test that needs longer still passes its own timeout. */
import { setDefaultTimeout } from "bun:test";

setDefaultTimeout(30_000);
