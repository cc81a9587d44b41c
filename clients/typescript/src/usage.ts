// A typed client of the sessions service, as a consumer would write it: openapi-fetch over the
// types openapi-typescript generates from ../../openapi.json. `npm run check` compiles it. The
// expected errors in typesArePrecise prove the types are precise: with a loose type (any, a
// plain string), such a directive has no error to expect, and tsc fails.
//
// --default-non-nullable false (package.json): openapi-typescript 7 would otherwise make every
// property with a default required, in request bodies and query parameters too (its issues
// #1741, #2012), so `limit` and a new session's `state` could not be left out.
import createClient from "openapi-fetch";

import type { components, paths } from "./generated/schema";

type Session = components["schemas"]["SessionRead"];
type Problem = components["schemas"]["Problem"];
type ValidationProblem = components["schemas"]["ValidationProblem"];

declare const token: string; // a JWT from the identity provider

const client = createClient<paths>({
  baseUrl: "http://127.0.0.1:8000",
  headers: { Authorization: `Bearer ${token}` },
});

export async function renameSession(title: string): Promise<Session | Problem> {
  const created = await client.POST("/sessions", {
    body: { event_id: 7, title: "Keyset pagination", level: "Advanced", starts_at: null },
  });
  if (created.error) {
    const invalid: ValidationProblem | Problem = created.error;
    return invalid;
  }
  const session: Session = created.data;
  const etag = created.response.headers.get("ETag") ?? "*";

  const fetched = await client.GET("/sessions/{session_id}", {
    params: { path: { session_id: session.id } },
  });
  if (fetched.data) {
    const version: number = fetched.data.version;
    const modified: string = fetched.data.last_modified_at;
    void [version, modified];
  }

  const page = await client.GET("/sessions", { params: { query: { event_id: 7, limit: 10 } } });
  const ids: number[] = page.data?.items.map((item) => item.id) ?? [];
  const next: string | null | undefined = page.data?.next_cursor;
  void [ids, next];

  const patched = await client.PATCH("/sessions/{session_id}", {
    params: { path: { session_id: session.id }, header: { "If-Match": etag } },
    headers: { "Content-Type": "application/merge-patch+json" },
    body: { title, subtitle: null },
  });
  if (patched.error) {
    const failed: Problem = patched.error;
    return failed;
  }

  // The ETag the change answered with: opaque, echoed as it came, never built from `version`.
  const changed = patched.response.headers.get("ETag") ?? "*";
  await client.DELETE("/sessions/{session_id}", {
    params: { path: { session_id: session.id }, header: { "If-Match": changed } },
  });
  return patched.data;
}

export function typesArePrecise(session: Session): void {
  // @ts-expect-error output-only fields are readonly
  session.version = 2;
  // @ts-expect-error level is one of four values
  const level: components["schemas"]["AudienceLevel"] = "Guru";
  // @ts-expect-error a request body has no id
  const create: components["schemas"]["SessionCreate"] = { event_id: 1, title: "x", id: 3 };
  // @ts-expect-error title is required when creating
  const untitled: components["schemas"]["SessionCreate"] = { event_id: 1 };
  void [level, create, untitled];
}

export async function syncOnce(since?: string): Promise<string | undefined> {
  const feed = await client.GET("/sessions/changes", {
    params: { query: since === undefined ? {} : { since } },
  });
  for (const item of feed.data?.items ?? []) {
    // `deleted` tells a tombstone from a stored session: TypeScript narrows the union on it.
    if (item.deleted) {
      const gone: components["schemas"]["SessionTombstone"] = item;
      void gone.deleted_at;
    } else {
      const kept: components["schemas"]["SessionChange"] = item;
      void kept.title;
    }
  }
  return feed.data?.next_token;
}
