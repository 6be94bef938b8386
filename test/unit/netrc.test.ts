import { expect, test } from "bun:test";
import { netrcAuthorization, parseNetrc } from "../../src/upstream/netrc.ts";

const basic = (user: string, pass: string) => "Basic " + Buffer.from(`${user}:${pass}`).toString("base64");

test("netrc: machines, default, comments, one-line and multi-line forms", () => {
  const netrc = parseNetrc(`# a comment
machine cache.example.org login alice password s3cret
machine other.example.org
  login bob
  password "x"
default login anon password guest
`);
  expect(netrcAuthorization(netrc, new URL("https://cache.example.org/x"))).toBe(basic("alice", "s3cret"));
  expect(netrcAuthorization(netrc, new URL("https://other.example.org/"))).toBe(basic("bob", '"x"'));
  expect(netrcAuthorization(netrc, new URL("https://unknown.example.org/"))).toBe(basic("anon", "guest"));
});

test("netrc: no entry, no header", () => {
  const netrc = parseNetrc("machine a.example login u password p");
  expect(netrcAuthorization(netrc, new URL("https://b.example/"))).toBeUndefined();
  expect(netrcAuthorization(parseNetrc(""), new URL("https://b.example/"))).toBeUndefined();
});

test("netrc: the first entry for a host wins, as in curl", () => {
  const netrc = parseNetrc("machine h login one password 1\nmachine h login two password 2");
  expect(netrcAuthorization(netrc, new URL("http://h/"))).toBe(basic("one", "1"));
});
