import { expect, test } from "bun:test";
import { clientAddress, parseAddressRange, TrustedProxyError } from "../../src/server/client-address.ts";

const proxies = ["10.0.0.0/8", "fd00::/8", "127.0.0.1"].map(parseAddressRange);

test("without trusted proxies X-Forwarded-For is ignored", () => {
  expect(clientAddress("203.0.113.9", "198.51.100.1", [])).toBe("203.0.113.9");
});

test("a peer that is not a trusted proxy cannot name another client", () => {
  expect(clientAddress("203.0.113.9", "198.51.100.1", proxies)).toBe("203.0.113.9");
});

test("behind trusted proxies the right-most untrusted hop is the client", () => {
  expect(clientAddress("10.1.2.3", "6.6.6.6, 198.51.100.1, 10.9.9.9", proxies)).toBe("198.51.100.1");
  expect(clientAddress("::ffff:127.0.0.1", "198.51.100.7", proxies)).toBe("198.51.100.7");
  expect(clientAddress("fd12::1", "2001:db8::5", proxies)).toBe("2001:db8::5");
});

test("a garbage hop is not believed", () => {
  expect(clientAddress("10.1.2.3", "not-an-address", proxies)).toBe("10.1.2.3");
});

test("ranges are parsed strictly", () => {
  for (const bad of ["10.0.0.0/33", "example.org", "10.0.0.1/8/1", "::/129", "1.2.3.4/x"]) {
    expect(() => parseAddressRange(bad)).toThrow(TrustedProxyError);
  }
  expect(parseAddressRange("::/0").prefix).toBe(0);
});
