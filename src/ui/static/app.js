// The sparsoup dashboard: plain DOM, no framework. Everything comes from the public API.
const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);
const KEY = 'sparsoup.apiKey';
const view = document.getElementById('view');
let timer = null;
let generation = 0;

// ---- API --------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, { as = 'json' } = {}) {
  const headers = { accept: as === 'json' ? 'application/json' : '*/*' };
  const key = localStorage.getItem(KEY);
  if (key) headers.authorization = `Bearer ${key}`;
  const res = await fetch(path, { headers });
  if (res.status === 401) document.getElementById('key-form').hidden = false;
  if (!res.ok) {
    let problem = null;
    try {
      problem = await res.json();
    } catch {}
    throw new ApiError(res.status, problem);
  }
  return as === 'blob' ? res.blob() : res.json();
}

// ---- DOM helpers ------------------------------------------------------------------------------

/** h('td.num', { title }, child…): children are nodes or text (never parsed as HTML). */
function h(tag, attrs = {}, ...children) {
  const [name, ...classes] = tag.split('.');
  const el = document.createElement(name);
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className += ` ${v}`;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

const pct = (x, d = 2) => (typeof x === 'number' && Number.isFinite(x) ? `${(x * 100).toFixed(d)}%` : '–');
const short = (id) => (id ? id.slice(0, 8) : '–');
const when = (t) => (t ? new Date(t).toLocaleString() : '–');
const badge = (s) => h(`span.badge.${s}`, {}, s);
const link = (href, text) => h('a', { href }, text);
const modelLink = (id) => (id ? link(`#/models/${id}`, h('span.id', {}, short(id))) : '–');

function bar(step, steps, status) {
  const f = status === 'succeeded' ? 1 : steps > 0 ? Math.min(1, step / steps) : 0;
  return h(`span.bar.${status}`, { role: 'progressbar', 'aria-valuenow': Math.round(f * 100) }, h('span', { style: `width:${(f * 100).toFixed(1)}%` }));
}

function table(id, headers, rows) {
  return h(
    'table',
    { id },
    h('thead', {}, h('tr', {}, headers.map((x) => (x.startsWith('#') ? h('th.num', {}, x.slice(1)) : h('th', {}, x))))),
    h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c, i) => (headers[i]?.startsWith('#') ? h('td.num', {}, c) : h('td', {}, c)))))),
  );
}

function meta(pairs) {
  return h('dl.meta', {}, pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function show(...nodes) {
  view.replaceChildren(...nodes);
}

/** Re-renders every `ms` while `active()` holds and the route has not changed. */
function poll(ms, render, active) {
  const mine = generation;
  timer = setTimeout(async () => {
    if (mine !== generation) return;
    try {
      await render();
    } catch (err) {
      console.warn(err);
    }
    if (mine === generation && active()) poll(ms, render, active);
  }, ms);
}

// ---- views ------------------------------------------------------------------------------------

async function runsView() {
  const render = async () => {
    const page = await api('/runs?limit=100');
    show(
      h('h1', {}, `Runs (${page.total})`),
      page.items.length
        ? table(
            'runs-table',
            ['run', 'kind', 'status', 'candidates', 'progress', 'created', 'finished'],
            page.items.map((r) => {
              const done = r.candidates.filter((c) => FINISHED.has(c.status)).length;
              return [link(`#/runs/${r.id}`, h('span.id', {}, short(r.id))), r.kind, badge(r.status), `${done} / ${r.candidates.length}`, bar(done, r.candidates.length, r.status), when(r.createdAt), when(r.finishedAt)];
            }),
          )
        : h('p.muted', {}, 'No runs yet: POST /runs, or `sparsoup runs create -f run.yaml`.'),
    );
    return page;
  };
  const page = await render();
  let active = page.items.some((r) => !FINISHED.has(r.status));
  poll(2000, async () => {
    const p = await render();
    active = p.items.some((r) => !FINISHED.has(r.status));
  }, () => active);
}

async function runView(id) {
  let run = await api(`/runs/${id}`);
  const plot = h('div', { id: 'report' });
  const render = () => {
    const phaseRows = (run.phases ?? []).map((p) => [
      p.index,
      pct(p.sparsity, 1),
      badge(p.status),
      p.maskId ? h('span.id', {}, short(p.maskId)) : '–',
      p.candidateIds?.length ?? 0,
      p.soupId ? link(`#/soups/${p.soupId}`, h('span.id', {}, short(p.soupId))) : '–',
      modelLink(p.resultModelId),
      pct(p.metrics?.testAccuracy),
    ]);
    show(
      h('h1', {}, `Run `, h('span.id', {}, run.id)),
      meta([
        ['kind', run.kind],
        ['status', badge(run.status)],
        ['model', modelLink(run.modelId)],
        ['dataset', run.datasetId],
        ['backend', run.backend ?? '–'],
        ['created', when(run.createdAt)],
        ['finished', when(run.finishedAt)],
        ...(run.error ? [['error', h('span.error', {}, run.error)]] : []),
      ]),
      phaseRows.length ? [h('h2', {}, 'Phases'), table('phases-table', ['#phase', 'sparsity', 'status', 'mask', '#candidates', 'soup', 'result', '#test'], phaseRows)] : [],
      h('h2', {}, 'Candidates'),
      table(
        'candidates-table',
        ['#candidate', '#phase', '#seed', 'status', 'progress', '#step', '#val', '#test', 'result'],
        run.candidates.map((c) => [
          c.index,
          c.phase,
          c.config?.seed ?? '–',
          badge(c.status),
          bar(c.progress?.step ?? 0, c.progress?.steps ?? 0, c.status),
          c.progress ? `${c.progress.step}/${c.progress.steps}` : '–',
          pct(c.valAccuracy),
          pct(c.testAccuracy),
          modelLink(c.resultModelId),
        ]),
      ),
      plot,
    );
  };
  render();
  const drawReport = async () => {
    if (!FINISHED.has(run.status)) return;
    try {
      const [report, svg] = await Promise.all([api(`/runs/${id}/report`), api(`/runs/${id}/report.svg`, { as: 'blob' })]);
      plot.replaceChildren(
        h('h2', {}, 'Accuracy against sparsity'),
        h('img.plot', { id: 'report-plot', alt: `accuracy against sparsity for ${report.label}`, src: URL.createObjectURL(svg) }),
        table(
          'report-table',
          ['#phase', 'sparsity', '#mean test', '#best test', 'result', '#result test', '#ECE'],
          report.phases.map((p) => [p.index, pct(p.actualSparsity, 1), pct(p.candidateMean?.testAccuracy), pct(p.candidateBest?.testAccuracy), p.soup ? `soup (${p.soup.method})` : p.result ? 'single' : '–', pct(p.result?.testAccuracy), p.result?.ece?.toFixed(4) ?? '–']),
        ),
      );
    } catch (err) {
      plot.replaceChildren(h('p.muted', {}, `No report: ${err.message}`));
    }
  };
  await drawReport();
  poll(1500, async () => {
    run = await api(`/runs/${id}`);
    render();
    if (FINISHED.has(run.status)) await drawReport();
  }, () => !FINISHED.has(run.status));
}

async function modelsView() {
  const page = await api('/models?limit=500');
  const byId = new Map(page.items.map((m) => [m.id, m]));
  const children = new Map();
  for (const m of page.items) for (const p of m.parentIds ?? []) if (byId.has(p)) children.set(p, [...(children.get(p) ?? []), m]);
  const roots = page.items.filter((m) => !(m.parentIds ?? []).some((p) => byId.has(p))).reverse();
  const seen = new Set();
  const node = (m) => {
    // A soup has several parents: draw it under each, expand it once.
    const again = seen.has(m.id);
    seen.add(m.id);
    const kids = again ? [] : (children.get(m.id) ?? []).slice().reverse();
    return h(
      'li',
      { 'data-model': m.id },
      link(`#/models/${m.id}`, m.name),
      ' ',
      h('span.muted', {}, `${m.format} · ${m.paramCount.toLocaleString()} params · sparsity ${pct(m.sparsity, 1)}${m.maskId ? ' · masked' : ''}${again ? ' · (above)' : ''}`),
      kids.length ? h('ul', {}, kids.map(node)) : null,
    );
  };
  show(h('h1', {}, `Models (${page.total})`), page.items.length ? h('ul.tree', { id: 'lineage' }, roots.map(node)) : h('p.muted', {}, 'No models yet.'));
}

async function modelView(id) {
  const m = await api(`/models/${id}`);
  show(
    h('h1', {}, m.name),
    meta([
      ['id', h('span.id', {}, m.id)],
      ['format', m.format],
      ['parameters', m.paramCount.toLocaleString()],
      ['sparsity', `${pct(m.sparsity)} (prunable ${pct(m.prunableSparsity)})`],
      ['parents', m.parentIds.length ? h('span', {}, m.parentIds.map((p) => [modelLink(p), ' '])) : '–'],
      ['mask', m.maskId ? h('span.id', {}, m.maskId) : '–'],
      ['sha256', h('span.id', {}, m.sha256)],
      ['created', when(m.createdAt)],
    ]),
    h('h2', {}, 'Tensors'),
    table('tensors-table', ['tensor', 'dtype', 'shape', 'prunable', '#sparsity'], m.tensors.map((t) => [t.name, t.dtype, `[${t.shape.join(', ')}]`, t.prunable ? 'yes' : 'no', pct(t.sparsity)])),
  );
}

async function soupsView() {
  const page = await api('/soups?limit=100');
  show(
    h('h1', {}, `Soups (${page.total})`),
    page.items.length
      ? table('soups-table', ['soup', 'method', 'status', '#ingredients', '#accepted', '#sparsity', '#val', 'result', 'created'], page.items.map((s) => [link(`#/soups/${s.id}`, h('span.id', {}, short(s.id))), s.method, badge(s.status), s.modelIds.length, s.acceptedIds.length, pct(s.sparsity, 1), pct(s.valAccuracy), modelLink(s.resultModelId), when(s.createdAt)]))
      : h('p.muted', {}, 'No soups yet.'),
  );
}

async function soupView(id) {
  let soup = await api(`/soups/${id}`);
  const render = () =>
    show(
      h('h1', {}, 'Soup ', h('span.id', {}, soup.id)),
      meta([
        ['method', soup.method],
        ['status', badge(soup.status)],
        ['result', modelLink(soup.resultModelId)],
        ['sparsity', pct(soup.sparsity)],
        ['val accuracy', pct(soup.valAccuracy)],
        ['mask', soup.maskHash ? h('span.id', {}, soup.maskHash.slice(0, 16)) : '–'],
        ...(soup.error ? [['error', h('span.error', {}, soup.error)]] : []),
      ]),
      h('h2', {}, 'Acceptance trace'),
      soup.steps.length
        ? table('trace-table', ['#step', 'candidate', '#own score', '#soup score', 'accepted'], soup.steps.map((s, i) => [i + 1, modelLink(s.modelId), pct(s.score), pct(s.soupScore), badge(s.accepted ? 'yes' : 'no')]))
        : h('p.muted', { id: 'trace-table' }, `${soup.method} soups take every ingredient: no trace.`),
      h('h2', {}, 'Ingredients'),
      table('ingredients-table', ['#', 'model', 'accepted', '#weight'], soup.modelIds.map((m, i) => [i + 1, modelLink(m), badge(soup.acceptedIds.includes(m) ? 'yes' : 'no'), soup.weights ? soup.weights[i].toFixed(4) : '–'])),
    );
  render();
  poll(1500, async () => {
    soup = await api(`/soups/${id}`);
    render();
  }, () => !FINISHED.has(soup.status));
}

// ---- routing ----------------------------------------------------------------------------------

const ROUTES = [
  [/^#\/runs\/([\w-]+)$/, runView, 'runs'],
  [/^#\/models\/([\w-]+)$/, modelView, 'models'],
  [/^#\/soups\/([\w-]+)$/, soupView, 'soups'],
  [/^#\/models$/, modelsView, 'models'],
  [/^#\/soups$/, soupsView, 'soups'],
  [/^(#\/runs)?$/, runsView, 'runs'],
];

async function route() {
  generation++;
  clearTimeout(timer);
  const hash = location.hash || '#/runs';
  const [pattern, render, nav] = ROUTES.find(([re]) => re.test(hash)) ?? ROUTES[ROUTES.length - 1];
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.nav === nav);
  const mine = generation;
  try {
    await render(...(pattern.exec(hash) ?? []).slice(1));
  } catch (err) {
    if (mine === generation) show(h('p.error', {}, err.message));
  }
  document.body.dataset.ready = hash;
}

async function health() {
  try {
    const res = await fetch('/health');
    const body = await res.json();
    document.getElementById('health').textContent = `${body.status} · v${body.version} · ${body.backend?.name ?? 'no backend yet'}`;
  } catch {
    document.getElementById('health').textContent = 'service unreachable';
  }
}

document.getElementById('key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  localStorage.setItem(KEY, document.getElementById('key').value.trim());
  document.getElementById('key-form').hidden = true;
  route();
});
window.addEventListener('hashchange', route);
health();
route();
