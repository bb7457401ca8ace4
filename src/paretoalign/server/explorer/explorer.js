/* paretoalign explorer: score responses against the server's reward model, re-weight objectives live, and browse
   `paretoalign bon` outputs and front reports (front.json) opened from disk.

   Plain ES2020, no framework, no network access beyond this server (relative URLs). Every piece of user or server
   text goes into the page through textContent / attributes, never innerHTML. Re-ranking with the sliders is pure
   client-side arithmetic on the last r' values: score_j = sum_i w_i r'_ij (the server's /v1/rewards returns exactly
   this for the same weights), ties broken by input order. */
'use strict';

const SLIDER_MIN = -1;
const SLIDER_MAX = 2;
const SLIDER_STEP = 0.05;
const DEFAULT_WEIGHT = 1;
const DIGITS = 4;
const SVG_NS = 'http://www.w3.org/2000/svg';

const state = {
  token: null,
  model: null,          // /v1/models data[0]
  limits: {},
  weights: {},          // objective name -> slider value (kept across views)
  mode: 'model',        // 'model': the server's gating / the file's scores; 'user': sum_i w_i r'_i
  score: null,          // {items: [{prompt, response, meta}], results: [...], objectiveNames: [...]} of the last scoring
  stale: false,
  bon: null,            // {rows, objectiveNames, index, fileName}
  front: null,          // {data, objectiveNames, fileName}
  view: 'score-view',
  busy: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, String(value));
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function isNum(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

function fmt(v, digits = DIGITS) {
  if (!isNum(v)) return '—';
  const s = v.toFixed(digits);
  return Number(s) === 0 ? (0).toFixed(digits) : s;  // no "-0.0000"
}

function snap(v) {
  const clamped = Math.min(SLIDER_MAX, Math.max(SLIDER_MIN, v));
  return Number((Math.round(clamped / SLIDER_STEP) * SLIDER_STEP).toFixed(2));
}

// ------------------------------------------------------------------ messages

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = !message;
}

function showFileError(message) {
  const box = $('file-error');
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(id, text) {
  $(id).textContent = text || '';
}

// ------------------------------------------------------------------ server

class ApiError extends Error {
  constructor(message, status, path) {
    super(message);
    this.status = status;
    this.path = path;
  }
}

async function api(method, path, body) {
  const headers = {Accept: 'application/json'};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (exc) {
    throw new ApiError(`could not reach the server (${exc.message})`, 0, null);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (exc) {
    data = null;
  }
  if (!response.ok) {
    const err = data && typeof data === 'object' && data.error ? data.error : null;
    const message = err && err.message ? err.message : `HTTP ${response.status}${text ? `: ${text.slice(0, 200)}` : ''}`;
    if (response.status === 401) showAuth(state.token ? 'the token was not accepted' : '');
    throw new ApiError(message, response.status, err ? err.path : null);
  }
  if (data === null) throw new ApiError(`${path}: the server sent no JSON`, response.status, null);
  return data;
}

function describe(exc) {
  if (exc instanceof ApiError) {
    const where = exc.path && exc.path !== '$' ? ` (at ${exc.path})` : '';
    const code = exc.status ? `${exc.status}: ` : '';
    return `${code}${exc.message}${where}`;
  }
  return String(exc && exc.message ? exc.message : exc);
}

function showAuth(note) {
  $('auth-panel').hidden = false;
  if (note) showError(note);
  $('token-input').focus();
}

async function loadModels() {
  let data;
  try {
    data = await api('GET', 'v1/models');
  } catch (exc) {
    $('model-info').textContent = exc.status === 401 ? 'token needed' : 'not connected';
    if (exc.status !== 401) showError(`could not load the model list: ${describe(exc)}`);
    return false;
  }
  const model = Array.isArray(data.data) && data.data.length ? data.data[0] : null;
  if (!model || !Array.isArray(model.objectives)) {
    showError('the server\'s /v1/models answer has no model with objectives');
    return false;
  }
  state.model = model;
  state.limits = model.limits || {};
  $('auth-panel').hidden = true;
  showError('');
  const parts = [`model: ${model.id}`, `${model.objectives.length} objectives`];
  if (isNum(model.scale)) parts.push(`gating scale s = ${fmt(model.scale, 2)}`);
  parts.push(`policy: ${model.policy || 'none'}`);
  $('model-info').textContent = parts.join(' · ');
  $('generate-controls').hidden = !model.policy;
  if (isNum(state.limits.max_n)) $('generate-n').max = String(state.limits.max_n);
  updateResponseButtons();
  renderAll();
  return true;
}

// ------------------------------------------------------------------ responses

function responseInputs() {
  return Array.from(document.querySelectorAll('#responses .response-input'));
}

function addResponse(text = '', meta = null) {
  const node = $('response-template').content.firstElementChild.cloneNode(true);
  const input = node.querySelector('.response-input');
  input.value = text;
  node.meta = meta;
  input.addEventListener('input', () => {
    node.meta = null;
    markStale();
  });
  node.querySelector('.remove-response-btn').addEventListener('click', () => {
    if (responseInputs().length <= 1) return;
    node.remove();
    relabelResponses();
    markStale();
  });
  $('responses').append(node);
  relabelResponses();
  return input;
}

function relabelResponses() {
  document.querySelectorAll('#responses .response-item').forEach((node, i) => {
    node.dataset.index = String(i);
    node.querySelector('.response-label').textContent = `${i + 1}`;
  });
  updateResponseButtons();
}

function updateResponseButtons() {
  const n = responseInputs().length;
  const max = isNum(state.limits.max_items) ? state.limits.max_items : Infinity;
  $('add-response-btn').disabled = n >= max;
  document.querySelectorAll('#responses .remove-response-btn').forEach((b) => { b.disabled = n <= 1; });
}

function markStale() {
  if (state.score && !state.stale) {
    state.stale = true;
    setStatus('score-status', 'edited since the last scoring: press Score to update');
  }
}

// ------------------------------------------------------------------ scoring

function collectItems() {
  const prompt = $('prompt').value;
  const items = [];
  const metas = [];
  for (const [i, input] of responseInputs().entries()) {
    if (!input.value.trim()) throw new Error(`response ${i + 1} is empty`);
    items.push({prompt, response: input.value});
    metas.push(input.closest('.response-item').meta || null);
  }
  if (!items.length) throw new Error('add at least one response');
  return {items, metas};
}

async function scoreNow() {
  if (state.busy) return;
  let items;
  let metas;
  try {
    ({items, metas} = collectItems());
  } catch (exc) {
    showError(exc.message);
    return;
  }
  state.busy = true;
  setStatus('score-status', 'scoring…');
  $('score-btn').disabled = true;
  try {
    const data = await api('POST', 'v1/rewards', {items, weights: null});
    if (!Array.isArray(data.results) || data.results.length !== items.length) {
      throw new Error('the server\'s answer does not have one result per response');
    }
    const names = Array.isArray(data.objective_names) ? data.objective_names : state.model.objectives;
    const results = data.results.slice().sort((a, b) => a.index - b.index);
    state.score = {items: items.map((item, i) => ({...item, meta: metas[i]})), results, objectiveNames: names};
    state.stale = false;
    if (state.mode === 'model') syncSlidersToGating();
    showError('');
    setStatus('score-status', `scored ${items.length} responses`);
    $('check-result').hidden = true;
    renderAll();
  } catch (exc) {
    showError(`scoring failed: ${describe(exc)}`);
    setStatus('score-status', '');
  } finally {
    state.busy = false;
    $('score-btn').disabled = false;
  }
}

async function generateNow() {
  if (state.busy) return;
  const prompt = $('prompt').value;
  if (!prompt.trim()) {
    showError('write a prompt to generate responses for');
    return;
  }
  let n = Math.round(Number($('generate-n').value));
  const maxN = isNum(state.limits.max_n) ? state.limits.max_n : 16;
  if (!Number.isFinite(n) || n < 1 || n > maxN) {
    showError(`N must be a whole number from 1 to ${maxN}`);
    return;
  }
  state.busy = true;
  $('generate-btn').disabled = true;
  setStatus('score-status', `generating ${n} responses…`);
  let row;
  try {
    row = await api('POST', 'v1/best-of-n', {prompt, n});
  } catch (exc) {
    showError(`generation failed: ${describe(exc)}`);
    setStatus('score-status', '');
    return;
  } finally {
    state.busy = false;
    $('generate-btn').disabled = false;
  }
  const candidates = Array.isArray(row.candidates) ? row.candidates : [];
  if (!candidates.length) {
    showError('the server generated no candidates');
    return;
  }
  $('responses').replaceChildren();
  candidates.forEach((c, i) => addResponse(String(c.response ?? ''), {
    finished: c.finished !== false, tokens: c.tokens, selected: i === row.selected,
  }));
  await scoreNow();
}

async function checkWithServer() {
  const box = $('check-result');
  if (!state.score) {
    box.hidden = false;
    box.textContent = 'score some responses first';
    return;
  }
  const names = state.score.objectiveNames;
  const weights = Object.fromEntries(names.map((name) => [name, weightOf(name)]));
  try {
    const data = await api('POST', 'v1/rewards', {items: state.score.items.map(({prompt, response}) => ({prompt, response})),
      weights});
    const local = state.score.results.map((r) => weightedScore(r.objectives, names));
    const server = data.results.slice().sort((a, b) => a.index - b.index).map((r) => r.score);
    const diff = Math.max(...server.map((s, i) => Math.abs(s - local[i])));
    box.textContent = `the server's scores with these weights differ from the page's by at most ${diff.toExponential(1)}`;
  } catch (exc) {
    box.textContent = `check failed: ${describe(exc)}`;
  }
  box.hidden = false;
}

// ------------------------------------------------------------------ weights

function weightOf(name) {
  return Object.prototype.hasOwnProperty.call(state.weights, name) ? state.weights[name] : DEFAULT_WEIGHT;
}

function weightedScore(objectives, names) {
  if (!objectives || typeof objectives !== 'object') return null;
  let total = 0;
  for (const name of names) {
    const r = objectives[name];
    if (!isNum(r)) return null;
    total += weightOf(name) * r;
  }
  return total;
}

function syncSlidersToGating() {
  // The sliders start from the weights the model effectively used for this prompt, s * g_i(x).
  const first = state.score && state.score.results[0];
  if (!first || !first.gating) return;
  const scale = state.model && isNum(state.model.scale) ? state.model.scale : 1;
  for (const name of state.score.objectiveNames) {
    if (isNum(first.gating[name])) state.weights[name] = snap(scale * first.gating[name]);
  }
}

function activeObjectives() {
  if (state.view === 'file-view') {
    if (state.bon) return state.bon.objectiveNames;
    if (state.front) return [];
  }
  if (state.score) return state.score.objectiveNames;
  return state.model ? state.model.objectives : [];
}

function renderSliders() {
  const names = activeObjectives();
  const box = $('weight-sliders');
  const key = names.join('\u0000');
  if (box.dataset.key !== key) {
    box.replaceChildren();
    box.dataset.key = key;
    for (const name of names) {
      const id = `weight-${names.indexOf(name)}`;
      const slider = el('input', {type: 'range', id, class: 'weight-slider', 'data-objective': name,
        min: SLIDER_MIN, max: SLIDER_MAX, step: SLIDER_STEP});
      slider.addEventListener('input', () => {
        state.mode = 'user';
        state.weights[name] = Number(slider.value);
        renderAll();
      });
      box.append(el('div', {class: 'slider-row'},
        el('label', {for: id, class: 'slider-name', title: name, text: name}),
        slider,
        el('output', {class: 'weight-value', 'data-objective': name, for: id})));
    }
  }
  for (const slider of box.querySelectorAll('input.weight-slider')) {
    const name = slider.dataset.objective;
    slider.value = String(weightOf(name));
    box.querySelector(`output.weight-value[data-objective="${CSS.escape(name)}"]`).textContent = fmt(weightOf(name), 2);
  }
  const frontOnly = state.view === 'file-view' && !state.bon && state.front;
  $('weights-panel').classList.toggle('inactive', Boolean(frontOnly));
  $('weights-panel').classList.toggle('user-mode', state.mode === 'user');
  $('check-btn').disabled = !(state.view === 'score-view' && state.score && state.mode === 'user');
  const mode = $('weights-mode');
  if (frontOnly) mode.textContent = 'a front report\'s rewards are fixed: weights do not apply';
  else if (state.mode === 'user') mode.textContent = 'user weights (re-ranked in the page)';
  else if (state.view === 'file-view' && state.bon) mode.textContent = 'the file\'s scores (move a slider to re-weight)';
  else mode.textContent = 'the model\'s gating (move a slider to re-weight)';
  const live = $('formula-live');
  if (state.mode === 'user' && names.length) {
    const terms = names.flatMap((name, i) => [i ? ' + ' : '',
      el('span', {class: 'term', text: `${fmt(weightOf(name), 2)}·r′(${name})`})]);
    live.replaceChildren('now: score = ', ...terms);
  } else if (state.view === 'file-view' && state.bon) {
    live.textContent = 'now: the scores stored in the file';
  } else {
    const s = state.model && isNum(state.model.scale) ? ` with s = ${fmt(state.model.scale, 2)}` : '';
    live.textContent = `now: the model's gating${s} (from the server)`;
  }
}

// ------------------------------------------------------------------ ranking and bars

/** Indices sorted by score, best first; ties (and missing scores, last) keep the input order. */
function rankOrder(scores) {
  return scores.map((s, i) => i).sort((a, b) => {
    const sa = isNum(scores[a]) ? scores[a] : -Infinity;
    const sb = isNum(scores[b]) ? scores[b] : -Infinity;
    return sb - sa || a - b;
  });
}

function maxAbs(values) {
  let m = 0;
  for (const v of values) if (isNum(v)) m = Math.max(m, Math.abs(v));
  return m > 0 ? m : 1;
}

/** A bar for `value` on a track whose half-width is `scale`; zero in the middle, or at the left when `signed` is
    false (every value of the column is >= 0, as gating weights are). */
function signedBar(value, scale, cls, signed = true) {
  const track = el('span', {class: `bar-track ${cls}${signed ? '' : ' unsigned'}`}, el('span', {class: 'bar-zero'}));
  if (isNum(value)) {
    const full = signed ? 50 : 100;
    const width = Math.min(full, (Math.abs(value) / scale) * full);
    const fill = el('span', {class: `bar-fill ${value >= 0 ? 'pos' : 'neg'}`});
    fill.style.width = `${width}%`;
    fill.style.left = signed ? (value >= 0 ? '50%' : `${50 - width}%`) : '0%';
    track.append(fill);
  }
  return track;
}

/**
 * One ranked row: head (rank, label, score, verbosity contribution, badges), the text and a bar grid.
 * entry: {index, label, text, score, objectives, weights (or null), verbosity, badges: [[cls, text]], rowClass}
 */
function resultRow(entry, rank, names, objScale, weightScale, weightLabel, weightSigned) {
  const row = el('div', {class: `result-row ${entry.rowClass || ''}`.trim(), 'data-index': entry.index,
    'data-rank': rank, 'data-testid': 'result-row'});
  const head = el('div', {class: 'result-head'},
    el('span', {class: 'result-rank', text: `#${rank}`}),
    el('span', {class: 'result-label', text: entry.label}),
    el('span', {class: 'result-score-label', text: 'score'}),
    el('span', {class: 'result-score', 'data-value': isNum(entry.score) ? entry.score : '', text: fmt(entry.score)}));
  if (entry.verbosity !== undefined) {
    head.append(el('span', {class: 'result-verbosity-label', text: 'verbosity contribution'}),
      el('span', {class: 'result-verbosity', text: fmt(entry.verbosity)}));
  }
  for (const [cls, text] of entry.badges || []) head.append(el('span', {class: `badge ${cls}`, text}));
  row.append(head, el('div', {class: 'result-text', text: entry.text}));
  const grid = el('div', {class: 'bars'},
    el('span', {class: 'bars-head', text: 'objective'}),
    el('span', {class: 'bars-head', text: 'r′ (signed, 0 in the middle)'}),
    el('span', {class: 'bars-head num', text: 'r′'}),
    el('span', {class: 'bars-head', text: weightLabel}),
    el('span', {class: 'bars-head num', text: ''}));
  for (const name of names) {
    const r = entry.objectives ? entry.objectives[name] : null;
    const w = entry.weights ? entry.weights[name] : null;
    grid.append(
      el('span', {class: 'bar-name', title: name, text: name}),
      signedBar(r, objScale, 'objective-bar'),
      el('span', {class: 'objective-value num', 'data-objective': name, 'data-value': isNum(r) ? r : '', text: fmt(r)}),
      entry.weights ? signedBar(w, weightScale, 'weight-bar', weightSigned) : el('span', {class: 'bar-none', text: '—'}),
      el('span', {class: 'gating-value num', 'data-objective': name, text: entry.weights ? fmt(w, 3) : ''}));
  }
  row.append(grid);
  return row;
}

function renderRanked(container, entries, names, weightLabel) {
  const objScale = maxAbs(entries.flatMap((e) => names.map((n) => (e.objectives ? e.objectives[n] : null))));
  const weights = entries.flatMap((e) => names.map((n) => (e.weights ? e.weights[n] : null)));
  const weightScale = maxAbs(weights);
  const weightSigned = weights.some((w) => isNum(w) && w < 0);
  const order = rankOrder(entries.map((e) => e.score));
  container.replaceChildren(...order.map((i, r) => resultRow(entries[i], r + 1, names, objScale, weightScale,
    weightLabel, weightSigned)));
}

function renderScore() {
  const box = $('results');
  if (!state.score) {
    box.replaceChildren(el('p', {class: 'note', text: 'Write a prompt and responses, then press Score.'}));
    return;
  }
  const names = state.score.objectiveNames;
  const user = state.mode === 'user';
  const verbosityName = state.model ? state.model.verbosity_objective : null;
  const userWeights = Object.fromEntries(names.map((n) => [n, weightOf(n)]));
  const entries = state.score.results.map((r, i) => {
    const item = state.score.items[i];
    const meta = item.meta || {};
    const badges = [];
    if (meta.finished === false) badges.push(['unfinished', 'unfinished (hit the token limit)']);
    if (meta.selected) badges.push(['picked', 'server\'s Best-of-N pick']);
    let verbosity = r.verbosity_contribution;
    if (user) verbosity = verbosityName && isNum(r.objectives[verbosityName])
      ? userWeights[verbosityName] * r.objectives[verbosityName] : null;
    return {index: i, label: `response ${i + 1}`, text: item.response,
      score: user ? weightedScore(r.objectives, names) : r.score, objectives: r.objectives,
      weights: user ? userWeights : r.gating,
      verbosity: (verbosityName || isNum(r.verbosity_contribution)) ? verbosity : undefined,
      badges, rowClass: meta.finished === false ? 'unfinished' : ''};
  });
  renderRanked(box, entries, names, user ? 'weight w (yours)' : 'gating g (model)');
  box.classList.toggle('stale', state.stale);
}

// ------------------------------------------------------------------ files

class FileProblem extends Error {}

function parseFile(name, text) {
  if (!text.trim()) throw new FileProblem(`${name}: the file is empty`);
  const trimmed = text.trim();
  let whole;
  let wholeError = null;
  try {
    whole = JSON.parse(trimmed);
  } catch (exc) {
    wholeError = exc;
  }
  const jsonl = /\.jsonl$/i.test(name);
  if (!wholeError && whole && typeof whole === 'object' && !Array.isArray(whole)) {
    if ('points' in whole) return {kind: 'front', data: checkFront(name, whole)};
    if ('candidates' in whole && !jsonl) return {kind: 'bon', rows: checkBonRows(name, [[1, whole]])};
  }
  if (!wholeError && !jsonl) {
    throw new FileProblem(`${name}: neither a front report (an object with "points") nor a paretoalign bon output `
      + '(one JSON object with "candidates" per line)');
  }
  if (/\.json$/i.test(name)) throw new FileProblem(`${name}: not valid JSON: ${wholeError.message}`);
  const rows = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim()) return;
    let row;
    try {
      row = JSON.parse(line);
    } catch (exc) {
      throw new FileProblem(`${name}, line ${i + 1}: not valid JSON (${exc.message})`);
    }
    rows.push([i + 1, row]);
  });
  return {kind: 'bon', rows: checkBonRows(name, rows)};
}

function checkBonRows(name, numbered) {
  return numbered.map(([line, row]) => {
    const where = `${name}, line ${line}`;
    if (!row || typeof row !== 'object' || Array.isArray(row)) throw new FileProblem(`${where}: a row must be a JSON object`);
    if (!Array.isArray(row.candidates)) throw new FileProblem(`${where}: no "candidates" list (is this a paretoalign bon output?)`);
    row.candidates.forEach((c, j) => {
      const at = `${where}: candidates[${j}]`;
      if (!c || typeof c !== 'object' || Array.isArray(c)) throw new FileProblem(`${at} must be an object`);
      if (typeof c.response !== 'string' && c.response !== null) throw new FileProblem(`${at}.response must be a string`);
      if (c.score !== null && c.score !== undefined && !isNum(c.score)) throw new FileProblem(`${at}.score must be a number or null`);
      if (c.objectives !== null && c.objectives !== undefined) {
        if (typeof c.objectives !== 'object' || Array.isArray(c.objectives)) {
          throw new FileProblem(`${at}.objectives must be an {objective: reward} object`);
        }
        for (const [k, v] of Object.entries(c.objectives)) {
          if (v !== null && !isNum(v)) throw new FileProblem(`${at}.objectives.${k} must be a number`);
        }
      }
      if (c.finished !== undefined && typeof c.finished !== 'boolean') throw new FileProblem(`${at}.finished must be true or false`);
    });
    const sel = row.selected;
    if (sel !== null && sel !== undefined && !(Number.isInteger(sel) && sel >= 0 && sel < row.candidates.length)) {
      throw new FileProblem(`${where}: "selected" must be null or a candidate index below ${row.candidates.length}`);
    }
    return {line, row};
  });
}

function checkFront(name, data) {
  if (!Array.isArray(data.points) || !data.points.length) throw new FileProblem(`${name}: "points" must be a non-empty list`);
  data.points.forEach((p, i) => {
    const at = `${name}: points[${i}]`;
    if (!p || typeof p !== 'object' || Array.isArray(p)) throw new FileProblem(`${at} must be an object`);
    if (typeof p.name !== 'string') throw new FileProblem(`${at}.name must be a string`);
    if (!p.objectives || typeof p.objectives !== 'object' || Array.isArray(p.objectives)) {
      throw new FileProblem(`${at}.objectives must be an {objective: reward} object`);
    }
    for (const key of ['reward', 'kl']) {
      if (p[key] !== null && p[key] !== undefined && !isNum(p[key])) throw new FileProblem(`${at}.${key} must be a number or null`);
    }
  });
  if (data.fronts !== undefined && !Array.isArray(data.fronts)) throw new FileProblem(`${name}: "fronts" must be a list`);
  return data;
}

async function openFile(file) {
  showFileError('');
  state.bon = null;
  state.front = null;
  $('bon-view').hidden = true;
  $('front-view').hidden = true;
  setStatus('file-status', '');
  let text;
  try {
    text = await file.text();
  } catch (exc) {
    showFileError(`${file.name}: could not read the file (${exc.message})`);
    renderAll();
    return;
  }
  try {
    const parsed = parseFile(file.name, text);
    if (parsed.kind === 'front') {
      const names = [];
      for (const p of parsed.data.points) for (const k of Object.keys(p.objectives)) if (!names.includes(k)) names.push(k);
      const listed = Array.isArray(parsed.data.objectives) ? parsed.data.objectives.filter((k) => names.includes(k)) : [];
      const ordered = listed.concat(names.filter((k) => !listed.includes(k)));
      state.front = {data: parsed.data, objectiveNames: ordered, fileName: file.name, x: 'kl', y: 'reward'};
      setStatus('file-status', `${file.name}: front report, ${parsed.data.points.length} points`);
      setupFrontAxes();
    } else {
      const names = [];
      for (const {row} of parsed.rows) {
        for (const c of row.candidates) for (const k of Object.keys(c.objectives || {})) if (!names.includes(k)) names.push(k);
      }
      state.bon = {rows: parsed.rows, objectiveNames: names, index: 0, fileName: file.name};
      setStatus('file-status', `${file.name}: Best-of-N output, ${parsed.rows.length} prompts`);
      setupBonSelect();
    }
  } catch (exc) {
    showFileError(exc instanceof FileProblem ? exc.message : `${file.name}: ${exc.message}`);
  }
  renderAll();
}

// ------------------------------------------------------------------ bon files

function promptText(prompt) {
  if (typeof prompt === 'string') return prompt;
  if (Array.isArray(prompt)) {
    return prompt.map((m) => (m && typeof m === 'object' ? `${m.role}: ${m.content}` : String(m))).join('\n');
  }
  return prompt === undefined ? '(no prompt field)' : JSON.stringify(prompt);
}

function setupBonSelect() {
  const select = $('bon-select');
  select.replaceChildren(...state.bon.rows.map(({row}, i) => {
    const text = promptText(row.prompt ?? row.messages).replace(/\s+/g, ' ');
    const label = `${i + 1}: ${row.id !== undefined && row.id !== null ? `[${row.id}] ` : ''}${text.slice(0, 80)}`;
    return el('option', {value: i, text: label});
  }));
}

function showBonRow(index) {
  if (!state.bon) return;
  state.bon.index = Math.max(0, Math.min(state.bon.rows.length - 1, index));
  renderAll();
}

function renderBon() {
  const view = $('bon-view');
  view.hidden = !state.bon;
  if (!state.bon) return;
  const {rows, index, objectiveNames: names} = state.bon;
  const {line, row} = rows[index];
  $('bon-select').value = String(index);
  $('bon-prev').disabled = index === 0;
  $('bon-next').disabled = index === rows.length - 1;
  $('bon-counter').textContent = `prompt ${index + 1} of ${rows.length} (line ${line})`;
  $('bon-prompt').textContent = promptText(row.prompt ?? row.messages);
  const user = state.mode === 'user';
  const userWeights = Object.fromEntries(names.map((n) => [n, weightOf(n)]));
  const scores = row.candidates.map((c) => (user ? weightedScore(c.objectives, names) : (isNum(c.score) ? c.score : null)));
  let pick = null;  // the Best-of-N rule: best score among finished candidates, ties to the lowest index
  scores.forEach((s, j) => {
    if (row.candidates[j].finished !== false && isNum(s) && (pick === null || s > scores[pick])) pick = j;
  });
  const entries = row.candidates.map((c, j) => {
    const badges = [];
    if (c.finished === false) badges.push(['unfinished', 'unfinished']);
    if (j === row.selected) badges.push(['file-picked', 'picked in the file']);
    if (user && j === pick) badges.push(['picked', 'pick with these weights']);
    if (isNum(c.tokens)) badges.push(['tokens', `${c.tokens} tokens`]);
    return {index: j, label: `candidate ${j + 1}`, text: c.response ?? '(no text)', score: scores[j],
      objectives: c.objectives || null, weights: user ? userWeights : null, badges,
      rowClass: `candidate-row${c.finished === false ? ' unfinished' : ''}`};
  });
  renderRanked($('bon-candidates'), entries, names, user ? 'weight w (yours)' : 'weight');
}

// ------------------------------------------------------------------ front reports

const AXIS_LABEL = {kl: 'KL to the reference [nats]', reward: 'mean reward'};

function setupFrontAxes() {
  const axes = ['kl', 'reward', ...state.front.objectiveNames];
  for (const id of ['front-x', 'front-y']) {
    $(id).replaceChildren(...axes.map((a) => el('option', {value: a, text: AXIS_LABEL[a] || a})));
  }
  $('front-x').value = state.front.x;
  $('front-y').value = state.front.y;
}

function axisValue(point, axis) {
  const v = axis === 'kl' || axis === 'reward' ? point[axis] : point.objectives[axis];
  return isNum(v) ? v : null;
}

/** On-front flags for axes x, y: the report's own front when it has one for this pair, else computed here. */
function frontMask(points, x, y) {
  const fronts = Array.isArray(state.front.data.fronts) ? state.front.data.fronts : [];
  const match = fronts.find((f) => f && ((f.x === x && f.y === y) || (f.x === y && f.y === x)));
  if (match && points.every((p) => p.on_front && typeof p.on_front[match.name] === 'boolean')) {
    return points.map((p) => p.on_front[match.name]);
  }
  const sign = (axis) => (axis === 'kl' ? -1 : 1);  // KL is minimised, rewards maximised
  const vals = points.map((p) => [axisValue(p, x), axisValue(p, y)]);
  return vals.map(([a, b], i) => {
    if (a === null || b === null || x === y) return a !== null && b !== null && x === y;
    return !vals.some(([c, d], j) => j !== i && c !== null && d !== null
      && sign(x) * c >= sign(x) * a && sign(y) * d >= sign(y) * b && (sign(x) * c > sign(x) * a || sign(y) * d > sign(y) * b));
  });
}

function niceTicks(lo, hi, count = 5) {
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return {ticks, step};
}

function renderFront() {
  const view = $('front-view');
  view.hidden = !state.front;
  if (!state.front) return;
  const {data, x, y} = state.front;
  $('front-title').textContent = typeof data.title === 'string' ? data.title : 'Front report';
  const points = data.points;
  const mask = frontMask(points, x, y);
  renderFrontPlot(points, mask, x, y);
  renderFrontTable(points, mask, x, y);
}

function renderFrontPlot(points, mask, x, y) {
  const W = 680;
  const H = 420;
  const m = {left: 70, right: 20, top: 34, bottom: 50};
  const plot = svg('svg', {viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'scatter', role: 'img',
    'aria-label': `${x} against ${y}`});
  const drawn = points.map((p, i) => ({p, i, vx: axisValue(p, x), vy: axisValue(p, y)})).filter((d) => d.vx !== null && d.vy !== null);
  const xs = drawn.map((d) => d.vx);
  const ys = drawn.map((d) => d.vy);
  const pad = (lo, hi) => {
    const span = hi - lo || Math.abs(hi) || 1;
    return [lo - 0.08 * span, hi + 0.08 * span];
  };
  const [x0, x1] = xs.length ? pad(Math.min(...xs), Math.max(...xs)) : [0, 1];
  const [y0, y1] = ys.length ? pad(Math.min(...ys), Math.max(...ys)) : [0, 1];
  const sx = (v) => m.left + ((v - x0) / (x1 - x0)) * (W - m.left - m.right);
  const sy = (v) => H - m.bottom - ((v - y0) / (y1 - y0)) * (H - m.top - m.bottom);
  plot.append(svg('rect', {x: m.left, y: m.top, width: W - m.left - m.right, height: H - m.top - m.bottom, class: 'plot-area'}));
  const xt = niceTicks(x0, x1);
  const yt = niceTicks(y0, y1);
  const tickDigits = (step) => Math.max(0, Math.min(6, -Math.floor(Math.log10(step)) + 1));
  for (const t of xt.ticks) {
    if (t < x0 || t > x1) continue;
    plot.append(svg('line', {x1: sx(t), x2: sx(t), y1: m.top, y2: H - m.bottom, class: 'grid'}),
      svg('text', {x: sx(t), y: H - m.bottom + 16, class: 'tick', 'text-anchor': 'middle'}, t.toFixed(tickDigits(xt.step))));
  }
  for (const t of yt.ticks) {
    if (t < y0 || t > y1) continue;
    plot.append(svg('line', {x1: m.left, x2: W - m.right, y1: sy(t), y2: sy(t), class: 'grid'}),
      svg('text', {x: m.left - 6, y: sy(t) + 4, class: 'tick', 'text-anchor': 'end'}, t.toFixed(tickDigits(yt.step))));
  }
  plot.append(svg('text', {x: (m.left + W - m.right) / 2, y: H - 10, class: 'axis-label', 'text-anchor': 'middle'},
    AXIS_LABEL[x] || x));
  plot.append(svg('text', {x: 16, y: (m.top + H - m.bottom) / 2, class: 'axis-label', 'text-anchor': 'middle',
    transform: `rotate(-90 16 ${(m.top + H - m.bottom) / 2})`}, AXIS_LABEL[y] || y));
  const front = drawn.filter((d) => mask[d.i]).sort((a, b) => a.vx - b.vx);
  if (front.length > 1) {
    plot.append(svg('polyline', {points: front.map((d) => `${sx(d.vx)},${sy(d.vy)}`).join(' '), class: 'front-line'}));
  }
  for (const d of drawn) {
    const kind = typeof d.p.kind === 'string' ? d.p.kind : 'point';
    const g = svg('g', {class: `front-point kind-${kind.replace(/[^a-z_]/gi, '')}${mask[d.i] ? ' on-front' : ''}`,
      'data-name': d.p.name, 'data-on-front': mask[d.i] ? 'true' : 'false'});
    g.append(svg('title', {}, `${d.p.name}: ${x} = ${fmt(d.vx)}, ${y} = ${fmt(d.vy)}${mask[d.i] ? ' (on the front)' : ''}`));
    if (mask[d.i]) g.append(svg('circle', {cx: sx(d.vx), cy: sy(d.vy), r: 9, class: 'ring'}));
    g.append(svg('circle', {cx: sx(d.vx), cy: sy(d.vy), r: 4.5, class: `dot${d.p.kl_is_bound ? ' bound' : ''}`}));
    const right = sx(d.vx) > W - m.right - 90;  // near the right edge: label on the left
    g.append(svg('text', {x: sx(d.vx) + (right ? -8 : 8), y: sy(d.vy) - 7, class: 'point-label',
      'text-anchor': right ? 'end' : 'start'}, d.p.name));
    plot.append(g);
  }
  const kinds = [['reference', 'reference'], ['policy', 'policy'], ['best_of_n', 'Best-of-N (open: KL is the bound)']]
    .filter(([k]) => points.some((p) => p.kind === k));
  let lx = m.left;  // the legend: one row above the plot area
  for (const [kind, label] of kinds) {
    const item = svg('g', {class: `legend kind-${kind}`});
    item.append(svg('circle', {cx: lx + 5, cy: 14, r: 4.5, class: `dot${kind === 'best_of_n' ? ' bound' : ''}`}),
      svg('text', {x: lx + 14, y: 18, class: 'legend-label'}, label));
    plot.append(item);
    lx += 24 + 6.5 * label.length;
  }
  const missing = points.length - drawn.length;
  const note = missing ? el('p', {class: 'note', text: `${missing} point(s) without a value on these axes are not drawn`}) : null;
  $('front-plot').replaceChildren(plot, ...(note ? [note] : []));
}

function renderFrontTable(points, mask, x, y) {
  const names = state.front.objectiveNames;
  const head = el('tr', {}, ...['name', 'kind', 'N', 'reward', 'KL', 'answered', ...names, `on front (${x} vs ${y})`]
    .map((h) => el('th', {text: h})));
  const rows = points.map((p, i) => el('tr', {class: `front-row${mask[i] ? ' on-front' : ''}`, 'data-name': p.name,
    'data-index': i},
  el('td', {class: 'front-name', text: p.name}),
  el('td', {text: p.kind ?? ''}),
  el('td', {class: 'num', text: p.n ?? ''}),
  el('td', {class: 'num front-reward', text: fmt(p.reward)}),
  el('td', {class: 'num front-kl', text: fmt(p.kl) + (p.kl_is_bound ? ' (bound)' : '')}),
  el('td', {class: 'num', text: isNum(p.answered_fraction) ? `${Math.round(100 * p.answered_fraction)}%` : ''}),
  ...names.map((n) => el('td', {class: 'num front-objective', 'data-objective': n, text: fmt(p.objectives[n])})),
  el('td', {class: 'front-flag', text: mask[i] ? 'yes' : ''})));
  $('front-table').replaceChildren(el('thead', {}, head), el('tbody', {}, ...rows));
}

// ------------------------------------------------------------------ views

function renderAll() {
  renderSliders();
  renderScore();
  renderBon();
  renderFront();
}

function switchView(view) {
  state.view = view;
  for (const tab of document.querySelectorAll('.tab')) {
    const active = tab.dataset.view === view;
    tab.classList.toggle('active', active);
    tab.setAttribute('aria-selected', active ? 'true' : 'false');
  }
  $('score-view').hidden = view !== 'score-view';
  $('file-view').hidden = view !== 'file-view';
  renderAll();
}

function init() {
  addResponse();
  addResponse();
  $('add-response-btn').addEventListener('click', () => {
    addResponse().focus();
    markStale();
  });
  $('score-btn').addEventListener('click', scoreNow);
  $('generate-btn').addEventListener('click', generateNow);
  $('check-btn').addEventListener('click', checkWithServer);
  $('prompt').addEventListener('input', markStale);
  $('score-view').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey) && event.target.tagName === 'TEXTAREA') {
      event.preventDefault();
      scoreNow();
    }
  });
  $('gating-btn').addEventListener('click', () => {
    state.mode = 'model';
    if (state.view === 'score-view') syncSlidersToGating();
    $('check-result').hidden = true;
    renderAll();
  });
  for (const tab of document.querySelectorAll('.tab')) tab.addEventListener('click', () => switchView(tab.dataset.view));
  $('auth-form').addEventListener('submit', (event) => {
    event.preventDefault();
    state.token = $('token-input').value.trim() || null;
    loadModels();
  });
  $('file-input').addEventListener('change', (event) => {
    const file = event.target.files && event.target.files[0];
    if (file) openFile(file).finally(() => { event.target.value = ''; });
  });
  $('bon-prev').addEventListener('click', () => showBonRow(state.bon.index - 1));
  $('bon-next').addEventListener('click', () => showBonRow(state.bon.index + 1));
  $('bon-select').addEventListener('change', () => showBonRow(Number($('bon-select').value)));
  for (const id of ['front-x', 'front-y']) {
    $(id).addEventListener('change', () => {
      state.front.x = $('front-x').value;
      state.front.y = $('front-y').value;
      renderFront();
    });
  }
  renderAll();
  loadModels();
}

document.addEventListener('DOMContentLoaded', init);
