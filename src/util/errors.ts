/**
 * Errors that cross the API boundary. Each carries the HTTP status Docker uses for the same
 * condition, so the API layer maps them without knowing where they came from.
 */
export class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = 'ApiError';
  }
}

export class NotFoundError extends ApiError {
  constructor(message: string) { super(404, message); }
}
export class ConflictError extends ApiError {
  constructor(message: string) { super(409, message); }
}
export class BadRequestError extends ApiError {
  constructor(message: string) { super(400, message); }
}
export class ForbiddenError extends ApiError {
  constructor(message: string) { super(403, message); }
}
export class NotModifiedError extends ApiError {
  constructor() { super(304, ''); }
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
