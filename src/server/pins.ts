/** POST and DELETE /pin/<hash>.narinfo, GET /pins (the Go ncps's routes). They take the put
 * token when one is set, else the get token (the route table gives them "write" access);
 * with no token at all they follow --cache-allow-put-verb, checked here. Answers are JSON. */
import type { Pins } from "../cache/pins.ts";
import { textResponse } from "./errors.ts";
import { narInfoHashOf } from "./narinfo.ts";
import type { RequestContext } from "./router.ts";
import type { WritePolicy } from "./write.ts";

export interface PinPolicy {
  /** a get or put token is set: the token guards the routes */
  tokenRequired: boolean;
  policy: WritePolicy;
}

type Handler = (ctx: RequestContext) => Promise<Response>;

/** Open to anyone only when PUT is: pinning fetches from the upstreams and fills the disk. */
const whenAllowed = ({ tokenRequired, policy }: PinPolicy, fn: Handler): Handler => async (ctx) =>
  tokenRequired || policy.allowPut ? fn(ctx) : textResponse(405, "pins need a token or --cache-allow-put-verb on this cache");

// HEAD needs nothing of its own: Bun sends a HEAD answer's headers without its body.
const json = (value: unknown) => Response.json(value);

const notANarInfo = () => textResponse(404, "not found: pins name /pin/<hash>.narinfo");

export const postPin = (pins: Pins, policy: PinPolicy) =>
  whenAllowed(policy, async ({ params }) => {
    const hash = narInfoHashOf(params.name!);
    if (hash === null) return notANarInfo();
    const added = await pins.add(hash);
    if (!added) return textResponse(404, "no upstream has this path");
    return json({ ...added.pin, added: added.added });
  });

export const deletePin = (pins: Pins, policy: PinPolicy) =>
  whenAllowed(policy, async ({ params }) => {
    const hash = narInfoHashOf(params.name!);
    if (hash === null) return notANarInfo();
    return json({ hash, removed: await pins.remove(hash) });
  });

export const getPins = (pins: Pins, policy: PinPolicy) => whenAllowed(policy, async () => json(await pins.list()));
