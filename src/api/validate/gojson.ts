import { BadRequestError } from '../../util/errors.js';

/**
 * Docker decodes every JSON body into typed Go structs with encoding/json, so a value of the wrong
 * type (a string where a list is expected, 1e30 or -1.5 for an int64) is refused before anything
 * else looks at the request. berth's handlers read plain JSON, so without this check such values
 * flow on and are stored or fail late with a 500. These schemas describe just the Go types of the
 * fields berth reads (and a few more clients send); unknown fields are ignored, as Go does.
 *
 * The error is Go's own text: `json: cannot unmarshal string into Go struct field
 * HostConfig.HostConfig.PortBindings of type []nat.PortBinding`. Docker 20.10 answers it with
 * 500 for container bodies (its decoder error is untyped there; Docker 23 made it 400) and 400 for
 * networks and volumes: berth answers 400 everywhere, since it is the client's mistake.
 */
export type GoType =
  | { k: 'string' } | { k: 'bool' } | { k: 'any' }
  | { k: 'int'; go: IntKind }
  | { k: 'float' }
  | { k: 'slice'; of: GoType; go: string }
  | { k: 'map'; of: GoType; go: string }
  | { k: 'struct'; name: string; go: string; fields: Record<string, GoType> };

type IntKind = 'int' | 'int64' | 'int32' | 'uint16' | 'uint32' | 'uint64' | 'int8';

const RANGES: Record<IntKind, [number, number]> = {
  int: [-(2 ** 63), 2 ** 63 - 1], int64: [-(2 ** 63), 2 ** 63 - 1], int32: [-(2 ** 31), 2 ** 31 - 1],
  int8: [-128, 127], uint16: [0, 65535], uint32: [0, 2 ** 32 - 1], uint64: [0, 2 ** 64 - 1],
};

export const str: GoType = { k: 'string' };
export const bool: GoType = { k: 'bool' };
export const any: GoType = { k: 'any' };
export const float: GoType = { k: 'float' };
export const int = (go: IntKind = 'int64'): GoType => ({ k: 'int', go });
export const slice = (of: GoType, go: string): GoType => ({ k: 'slice', of, go });
export const map = (of: GoType, go: string): GoType => ({ k: 'map', of, go });
export const struct = (name: string, go: string, fields: Record<string, GoType>): GoType => ({ k: 'struct', name, go, fields });

function goTypeName(t: GoType): string {
  switch (t.k) {
    case 'string': return 'string';
    case 'bool': return 'bool';
    case 'any': return 'interface {}';
    case 'float': return 'float64';
    case 'int': return t.go;
    default: return t.go;
  }
}

/** How Go names the JSON value in the error: `string`, `number 1e+30`, `object`, `array`, `bool`. */
function valueKind(v: unknown, forInt: boolean): string {
  if (typeof v === 'number') return forInt ? `number ${String(v)}` : 'number';
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  if (Array.isArray(v)) return 'array';
  return 'object';
}

interface Where { struct: string; path: string[] }

/**
 * Checks `value` against `t`; the first mismatch (in document order, as Go reports the first
 * one it saved) throws a 400 with Go's message. JSON null fits every type, as in Go.
 */
export function checkGoJson(value: unknown, t: GoType, where: Where = { struct: '', path: [] }): void {
  if (value === null || value === undefined || t.k === 'any') return;
  const fail = (forInt = false): never => {
    const field = where.struct ? `Go struct field ${[where.struct, ...where.path].join('.')}` : 'Go value';
    throw new BadRequestError(`json: cannot unmarshal ${valueKind(value, forInt)} into ${field} of type ${goTypeName(t)}`);
  };
  switch (t.k) {
    case 'string': if (typeof value !== 'string') fail(); return;
    case 'bool': if (typeof value !== 'boolean') fail(); return;
    case 'float': if (typeof value !== 'number') fail(); return;
    case 'int': {
      if (typeof value !== 'number') fail();
      const [lo, hi] = RANGES[t.go];
      if (!Number.isInteger(value) || (value as number) < lo || (value as number) > hi) fail(true);
      return;
    }
    case 'slice':
      if (!Array.isArray(value)) fail();
      for (const item of value as unknown[]) checkGoJson(item, t.of, where);
      return;
    case 'map':
      if (typeof value !== 'object' || Array.isArray(value)) fail();
      for (const item of Object.values(value as object)) checkGoJson(item, t.of, where);
      return;
    case 'struct': {
      if (typeof value !== 'object' || Array.isArray(value)) fail();
      // encoding/json matches keys to fields without regard to case.
      const fields = new Map(Object.entries(t.fields).map(([k, v]) => [k.toLowerCase(), [k, v] as const]));
      for (const [key, item] of Object.entries(value as object)) {
        const f = fields.get(key.toLowerCase());
        if (!f) continue;
        // Go names the struct type that holds the field, then the path of fields from the top.
        checkGoJson(item, f[1], { struct: t.name, path: [...where.path, f[0]] });
      }
      return;
    }
  }
}
