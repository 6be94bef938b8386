import { expect, test } from "bun:test";
import { hostname } from "node:os";
import { advertiseUrl } from "../../src/compose.ts";

test("the advertised URL: the one given (as an origin), else the listening address, else the host name when listening on all", () => {
  expect(advertiseUrl({ cacheAdvertiseUrl: "http://ncps-0.ncps:8501/" }, { hostname: "0.0.0.0", port: 8501 })).toBe("http://ncps-0.ncps:8501");
  expect(advertiseUrl({}, { hostname: "10.0.0.7", port: 8501 })).toBe("http://10.0.0.7:8501");
  expect(advertiseUrl({}, { hostname: "fd00::7", port: 8501 })).toBe("http://[fd00::7]:8501");
  expect(advertiseUrl({}, { hostname: "0.0.0.0", port: 41234 })).toBe(`http://${hostname()}:41234`);
  expect(advertiseUrl({}, { hostname: "::", port: 8501 })).toBe(`http://${hostname()}:8501`);
});
