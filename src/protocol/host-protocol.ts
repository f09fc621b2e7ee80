/**
 * The runner-host channel: what a controller and the runner hosts it supervises say to each
 * other over the host's unix socket (mode 0600, below the controller's 0700 state dir), one
 * JSON object per line. Commands go to the host; events, and one `hello` after each connect,
 * come back. A registration token crosses this channel once and is never written to disk.
 * TypeBox schemas: the host validates every command, the controller every event.
 */
import { Type, type Static, type TSchema, type TProperties } from "@sinclair/typebox";
import { Labels } from "./schemas.ts";

const Obj = <T extends TProperties>(props: T) => Type.Object(props, { additionalProperties: false });
const Id = Type.String({ pattern: "^[A-Za-z0-9._-]{1,128}$" });
const Int = Type.Integer({ minimum: 0 });
const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

export const SessionState = Type.Union([Type.Literal("starting"), Type.Literal("idle"), Type.Literal("busy"), Type.Literal("draining")]);
export type SessionState = Static<typeof SessionState>;

export const SessionView = Obj({
  id: Id, state: SessionState, slot: Int, launchedAtMs: Int, sinceMs: Int, everBusy: Type.Boolean(), jobId: Nullable(Type.String({ maxLength: 128 })),
});
export type SessionView = Static<typeof SessionView>;

export const HostCommand = Type.Union([
  Obj({ op: Type.Literal("launch"), id: Id, registrationToken: Type.String({ minLength: 1, maxLength: 512 }), serverUrl: Type.String({ pattern: "^https?://", maxLength: 2048 }), labels: Labels }),
  Obj({ op: Type.Literal("drain"), id: Id }),
  Obj({ op: Type.Literal("terminate"), id: Id }),
  /** Take no new sessions, stop idle ones, exit once the busy ones ended. */
  Obj({ op: Type.Literal("retire") }),
]);
export type HostCommand = Static<typeof HostCommand>;

export const HostEvent = Type.Union([
  Obj({ type: Type.Literal("hello"), hostId: Id, pid: Int, served: Int, ageMs: Int, retiring: Type.Boolean(), sessions: Type.Array(SessionView) }),
  Obj({ type: Type.Literal("session_state"), id: Id, state: SessionState, sinceMs: Int, jobId: Nullable(Type.String({ maxLength: 128 })) }),
  Obj({
    type: Type.Literal("session_exited"), id: Id, code: Nullable(Type.Integer()), reason: Type.String({ maxLength: 256 }),
    jobId: Nullable(Type.String({ maxLength: 128 })), everBusy: Type.Boolean(), lifetimeMs: Int, reaped: Type.Array(Type.String({ maxLength: 4096 })),
  }),
  Obj({ type: Type.Literal("retiring"), served: Int, ageMs: Int }),
  /** A command the host refused (the session it named, if any, does not exist or cannot start). */
  Obj({ type: Type.Literal("refused"), id: Nullable(Id), code: Type.String({ maxLength: 64 }), message: Type.String({ maxLength: 1024 }) }),
]);
export type HostEvent = Static<typeof HostEvent>;
