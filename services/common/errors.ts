// One error type crosses room boundaries; the API turns it into
// {"error": {"code", "message", "details"}} with its HTTP status.
export interface ErrorDetail {
  path?: string;
  line?: number;
  message: string;
}

export class AppError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: ErrorDetail[] = [],
  ) {
    super(message);
    this.name = "AppError";
  }
}

export const notFound = (what: string, id: string) => new AppError(404, "not_found", `${what} ${id} not found`);
