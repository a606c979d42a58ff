/**
 * JSON.parse silently keeps the last of two equal keys and reorders integer-like keys. The checkpoint
 * parsers need both facts it hides: duplicate keys (a header naming one tensor twice is ambiguous)
 * and the document order of the top-level keys. This scanner walks text that JSON.parse has
 * already accepted, iteratively (no recursion, so deep nesting cannot overflow the stack).
 */

export interface JsonKeyScan {
  /** Top-level object keys in document order (empty when the top level is not an object). */
  topLevelKeys: string[];
  /** The first key seen twice in one object, with the path of keys leading to that object. */
  duplicate?: { key: string; path: string[] };
  /** Deepest nesting of objects and arrays (JSON.stringify recurses: deep values crash it later). */
  maxDepth: number;
}

interface Frame {
  isObject: boolean;
  keys?: Set<string>;
  /** Key under which this container sits in its parent object (undefined for array items/root). */
  key?: string;
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

export function scanJsonKeys(text: string): JsonKeyScan {
  const topLevelKeys: string[] = [];
  const stack: Frame[] = [];
  let i = 0;
  const n = text.length;

  const skipWs = () => {
    while (i < n && WS.has(text.charCodeAt(i))) i++;
  };
  // At an opening quote: returns the decoded string and moves past the closing quote.
  const readString = (): string => {
    const start = i;
    i++;
    let escaped = false;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x5c) {
        escaped = true;
        i += 2;
        continue;
      }
      if (c === 0x22) break;
      i++;
    }
    i++;
    const raw = text.slice(start, i);
    return escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1);
  };
  const path = () => stack.filter((f) => f.key !== undefined).map((f) => f.key as string);

  // Modes: 0 = expecting a value, 1 = expecting an object key, 2 = after a value.
  let mode = 0;
  let pendingKey: string | undefined;
  let maxDepth = 0;
  while (true) {
    skipWs();
    // Only reached on text JSON.parse rejected (a caller bug); stop rather than loop.
    if (i >= n) return { topLevelKeys, maxDepth };
    if (mode === 0) {
      const c = text.charCodeAt(i);
      if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
        i++;
        skipWs();
        const close = c === 0x7b ? 0x7d : 0x5d;
        if (text.charCodeAt(i) === close) {
          if (stack.length + 1 > maxDepth) maxDepth = stack.length + 1;
          i++;
          mode = 2;
        } else {
          stack.push({ isObject: c === 0x7b, keys: c === 0x7b ? new Set() : undefined, key: pendingKey });
          if (stack.length > maxDepth) maxDepth = stack.length;
          mode = c === 0x7b ? 1 : 0;
        }
        pendingKey = undefined;
      } else if (c === 0x22) {
        readString();
        pendingKey = undefined;
        mode = 2;
      } else {
        // Number or literal: runs until a delimiter.
        while (i < n) {
          const d = text.charCodeAt(i);
          if (d === 0x2c || d === 0x5d || d === 0x7d || WS.has(d)) break;
          i++;
        }
        pendingKey = undefined;
        mode = 2;
      }
    } else if (mode === 1) {
      const key = readString();
      const frame = stack[stack.length - 1];
      if (frame.keys!.has(key)) return { topLevelKeys, duplicate: { key, path: path() }, maxDepth };
      frame.keys!.add(key);
      if (stack.length === 1) topLevelKeys.push(key);
      skipWs();
      i++; // the colon
      pendingKey = key;
      mode = 0;
    } else {
      if (stack.length === 0) return { topLevelKeys, maxDepth };
      const c = text.charCodeAt(i);
      i++;
      if (c === 0x2c) mode = stack[stack.length - 1].isObject ? 1 : 0;
      else stack.pop(); // } or ]
    }
  }
}
