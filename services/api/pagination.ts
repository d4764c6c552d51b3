// Opaque cursors for lists ordered newest first by (createdAt, id): stable while rows are
// added, because a page continues strictly after the last row it returned.
import { CANONICAL_UUID } from "../common/db.ts";
import { AppError } from "../common/errors.ts";

export interface Cursor {
  createdAt: Date;
  id: string;
}

export function encodeCursor(row: Cursor): string {
  return Buffer.from(JSON.stringify([row.createdAt.toISOString(), row.id])).toString("base64url");
}

const invalidCursor = () =>
  new AppError(400, "invalid_cursor", "the cursor is not one this API returned", [{ path: "querystring.cursor", message: "invalid cursor" }]);

export function decodeCursor(cursor: string): Cursor {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    throw invalidCursor();
  }
  if (!Array.isArray(parsed) || parsed.length !== 2 || typeof parsed[0] !== "string" || typeof parsed[1] !== "string") throw invalidCursor();
  const createdAt = new Date(parsed[0]);
  // Only what Postgres can compare: a timestamp within years 1–9999 and a canonical UUID.
  const year = createdAt.getUTCFullYear();
  if (Number.isNaN(year) || year < 1 || year > 9999 || !CANONICAL_UUID.test(parsed[1])) throw invalidCursor();
  return { createdAt, id: parsed[1] };
}

/** The Prisma `where` fragment selecting rows after the cursor in newest-first order. */
export function afterCursor(cursor: string | undefined) {
  if (cursor === undefined) return {};
  const { createdAt, id } = decodeCursor(cursor);
  return { OR: [{ createdAt: { lt: createdAt } }, { createdAt, id: { lt: id } }] };
}

export const newestFirst = [{ createdAt: "desc" as const }, { id: "desc" as const }];

/** Fetch `limit + 1` rows and pass them here: the extra row only says another page exists. */
export function page<T extends Cursor, V>(rows: T[], limit: number, view: (row: T) => V): { data: V[]; nextCursor: string | null } {
  const more = rows.length > limit;
  const shown = more ? rows.slice(0, limit) : rows;
  return { data: shown.map(view), nextCursor: more ? encodeCursor(shown[shown.length - 1]) : null };
}
