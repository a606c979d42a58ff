import * as tf from '@tensorflow/tfjs';

/**
 * `tf.variableGrads` with a smaller working set, bit for bit the same gradients.
 *
 * TensorFlow.js's backward pass (`Engine.gradients` → `backpropagateGradients`) keeps every tensor
 * the forward pass saved for the backward one, and the gradient of every intermediate tensor, alive
 * until the whole backward pass ends: at batch 128 a `cnn-bn` step peaks at ~416 MiB of live tensors,
 * and the wasm heap, which never shrinks, stays that size. This walks the same tape in the same order
 * and calls the same gradient functions with the same inputs (so the same kernels run on the same
 * values, and the result is identical), but frees what the rest of the walk no longer needs: a node's
 * saved tensors once its gradients are computed, and the gradient of a node's outputs once the node is
 * processed (each tensor is the output of one node, so nothing later reads it).
 *
 * Tape filtering and the walk follow tfjs-core 4.x's `tape.ts` and `engine.ts` (Apache-2.0,
 * Copyright Google LLC); only the disposals are new.
 */

interface TapeNode {
  id: number;
  kernelName: string;
  outputs: tf.Tensor[];
  inputs: Record<string, tf.Tensor>;
  gradient?: (dys: (tf.Tensor | null)[]) => Record<string, () => tf.Tensor>;
  saved?: tf.Tensor[];
}

interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number };
  startTape(): void;
  endTape(): void;
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
  tidy<T extends tf.TensorContainer>(name: string, f: () => T): T;
  tidy<T extends tf.TensorContainer>(f: () => T): T;
}

/** tfjs-core's getFilteredNodesXToY: the tape nodes on a path from one of xs to y. */
function filteredNodes(tape: TapeNode[], xs: tf.Tensor[], y: tf.Tensor): TapeNode[] {
  const fromX: Record<number, boolean> = {};
  const nodesFromX: Record<number, boolean> = {};
  for (const x of xs) fromX[x.id] = true;
  for (const node of tape) {
    for (const name in node.inputs) {
      if (fromX[node.inputs[name].id]) {
        for (const o of node.outputs) fromX[o.id] = true;
        nodesFromX[node.id] = true;
        break;
      }
    }
  }
  const toY: Record<number, boolean> = { [y.id]: true };
  const nodesToY: Record<number, boolean> = {};
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    if (node.outputs.some((o) => toY[o.id])) {
      for (const name in node.inputs) {
        toY[node.inputs[name].id] = true;
        nodesToY[node.id] = true;
      }
    }
  }
  const out: TapeNode[] = [];
  for (const node of tape) {
    if (!nodesFromX[node.id] || !nodesToY[node.id]) continue;
    const inputs: Record<string, tf.Tensor> = {};
    for (const name in node.inputs) if (fromX[node.inputs[name].id]) inputs[name] = node.inputs[name];
    out.push({ ...node, inputs, outputs: node.outputs });
  }
  return out;
}

/**
 * The loss `f()` (a scalar) and its gradient with respect to each of `varList` (all trainable), as
 * `tf.variableGrads(f, varList)` returns them. Not for higher-order gradients (it refuses to nest).
 */
export function leanVariableGrads(f: () => tf.Scalar, varList: tf.Variable[]): { value: tf.Scalar; grads: Record<string, tf.Tensor> } {
  const engine = tf.engine() as unknown as EngineInternals;
  if (engine.state.gradientDepth !== 0) throw new Error('leanVariableGrads does not nest inside another gradient computation');
  if (varList.length === 0 || varList.some((v) => !v.trainable)) throw new Error('leanVariableGrads takes trainable variables only');
  const y = engine.scopedRun(
    () => engine.startTape(),
    () => engine.endTape(),
    () => engine.tidy('forward', f),
  );
  if (!(y instanceof tf.Tensor) || y.rank !== 0) throw new Error('the f passed to leanVariableGrads must return a scalar');
  const tape = engine.state.activeTape ?? [];
  const nodes = filteredNodes(tape, varList, y);
  if (nodes.length === 0) throw new Error('no connection between the variables and the result of f');
  return engine.tidy('backward', () => {
    const acc: Record<number, tf.Tensor> = { [y.id]: tf.ones(y.shape) };
    // How many map entries hold each tensor object (a gradient function may pass a dy through as a dx).
    const holders = new Map<tf.Tensor, number>([[acc[y.id], 1]]);
    const hold = (t: tf.Tensor) => holders.set(t, (holders.get(t) ?? 0) + 1);
    const release = (t: tf.Tensor) => {
      const n = (holders.get(t) ?? 1) - 1;
      if (n > 0) holders.set(t, n);
      else {
        holders.delete(t);
        t.dispose();
      }
    };
    for (let i = nodes.length - 1; i >= 0; i--) {
      const node = nodes[i];
      const dys = node.outputs.map((o) => acc[o.id] ?? null);
      if (node.gradient == null) throw new Error(`Cannot compute gradient: gradient function not found for ${node.kernelName}.`);
      const inputGradients = node.gradient(dys);
      for (const name in node.inputs) {
        if (!(name in inputGradients)) throw new Error(`Cannot backprop through input ${name}.`);
        const dx = engine.tidy(() => inputGradients[name]());
        const x = node.inputs[name];
        if (dx.dtype !== 'float32') throw new Error(`the gradient of ${node.kernelName}'s input ${name} is ${dx.dtype}, not float32`);
        if (!tf.util.arraysEqual(dx.shape, x.shape)) throw new Error(`the gradient of ${node.kernelName}'s input ${name} has shape ${dx.shape}, not ${x.shape}`);
        const cur = acc[x.id];
        if (cur == null) {
          acc[x.id] = dx;
          hold(dx);
        } else {
          const sum = tf.add(cur, dx);
          acc[x.id] = sum;
          hold(sum);
          release(cur);
          // tfjs leaves dx to the scope's end; it is read only by the add above.
          if (!holders.has(dx)) dx.dispose();
        }
      }
      // Nothing later reads this node's saved tensors or its outputs' gradients.
      for (const t of node.saved ?? []) t.dispose();
      for (const o of node.outputs) {
        const g = acc[o.id];
        if (g == null) continue;
        delete acc[o.id];
        release(g);
      }
    }
    const grads: Record<string, tf.Tensor> = {};
    for (const v of varList) if (acc[v.id] != null) grads[v.name] = acc[v.id];
    for (const node of tape) for (const t of node.saved ?? []) t.dispose();
    engine.state.activeTape = null;
    if (Object.keys(grads).length === 0) throw new Error('no connection between the variables and the result of f');
    return { value: y, grads };
  });
}
