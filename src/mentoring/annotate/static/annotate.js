/* mentoring annotate: the queue page's script (the only one; no build step).
 *
 * It draws the image and its detected areas and turns keys into API calls. The server decides
 * everything (ids, classes, leases); the page shows its answer. Actions are sent one at a time,
 * in the order of the keys, each with its own request id (a retry after a network error reuses
 * it, so the server applies it once). The page moves on at once (the next image is prefetched)
 * and takes the server's state when nothing else is in flight. The server leases each operator's
 * next image together with the current one (the first of `following`, `leased_to` this
 * operator): keys pressed on it are sent at once. A prefetched image further on is not leased
 * and may go to another operator first: keys pressed on it wait until its lease comes back (tens
 * of ms), and are dropped, with a message, if the server hands out another image instead.
 *
 * Data from the tasks is only ever put into the page with textContent or setAttribute, never as
 * markup.
 */
'use strict';

(() => {
  const cfg = JSON.parse(document.getElementById('config').textContent);
  const SVG = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);
  const el = {
    canvas: $('canvas'),
    image: $('image'),
    overlay: $('overlay'),
    layer: $('area-layer'),
    draft: $('draft'),
    title: $('image-title'),
    state: $('image-state'),
    source: $('image-source'),
    areas: $('areas'),
    drawn: $('drawn-list'),
    strip: $('strip'),
    help: $('help'),
    picker: $('class-picker'),
    message: $('message'),
    progress: $('progress'),
    operators: $('operators'),
  };
  const colors = new Map(cfg.classes.map((c) => [c.name, c.color]));
  const st = {
    image: null, // the image shown (state as the server sent it, plus optimistic changes)
    following: [], // prefetched images likely to come next
    cur: 0, // index of the current area
    pending: 0, // actions sent and not answered yet
    asked: 0, // "next image" requests sent: only the answer to the latest one is applied
    // while the next image's lease is asked: 'pre' (a prefetched image is shown: keys wait in
    // `queued` until it is ours) or 'none' (nothing new shown yet: keys have nothing to act on)
    waiting: 'none',
    queued: [],
    chain: Promise.resolve(),
    drag: null, // a box being drawn
    box: null, // a drawn box waiting for its class
  };

  // -- the server ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function requestId() {
    // crypto.getRandomValues works on plain http too (randomUUID needs a secure context)
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  async function api(method, url, body) {
    const headers = { Accept: 'application/json' };
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (method !== 'GET') {
      headers['Content-Type'] = 'application/json';
      headers['X-CSRF-Token'] = cfg.csrf;
      init.body = JSON.stringify(body || {});
    }
    for (let attempt = 0; ; attempt += 1) {
      let resp;
      try {
        resp = await fetch(url, init);
      } catch (err) {
        if (attempt < 5) {
          await sleep(150 * 2 ** attempt);
          continue; // the same body, so the same request id
        }
        throw new ApiError(0, `the server does not answer (${err.message})`);
      }
      if (resp.status === 401) {
        window.location.assign('/login');
        throw new ApiError(401, 'logged out');
      }
      if (resp.status === 503 && attempt < 5) {
        await sleep(150 * 2 ** attempt);
        continue;
      }
      let data = {};
      try {
        data = await resp.json();
      } catch (_) {
        data = {};
      }
      if (!resp.ok) throw new ApiError(resp.status, data.error || resp.statusText);
      return data;
    }
  }

  /** Send a state-changing request after the ones before it (key order is server order). */
  function send(url, body) {
    st.pending += 1;
    const p = st.chain
      .then(() => api('POST', url, body))
      .finally(() => {
        st.pending -= 1;
      });
    st.chain = p.catch(() => undefined);
    return p;
  }

  function say(text, kind = 'info') {
    el.message.textContent = text;
    el.message.dataset.kind = kind;
  }

  function fail(err) {
    say(err.message, 'error');
    if (err.status === 409 || err.status === 404) resync();
  }

  // -- drawing the page ---------------------------------------------------------------------

  const imageUrl = (id) => `/image/${encodeURIComponent(id)}`;
  const colorOf = (name) => colors.get(name) || '#ffffff';
  const localDone = (im) =>
    im.healthy || im.finished || (im.areas.length > 0 && im.areas.every((a) => a.verdict !== null));

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function areaGroup(a, index, drawn) {
    const [x0, y0, x1, y1] = a.bbox;
    const g = svg('g', { class: 'area' + (drawn ? ' drawn' : '') });
    g.dataset.areaId = a.area_id;
    g.dataset.class = a.class;
    if (!drawn) {
      g.dataset.index = String(index);
      g.dataset.verdict = a.verdict || '';
      if (index === st.cur) g.classList.add('current');
    }
    const color = colorOf(a.class);
    const pad = cfg.width / 128; // one pixel of a 128 px image
    if (index === st.cur && !drawn) {
      g.append(svg('rect', {
        class: 'halo', x: x0 - pad, y: y0 - pad, width: x1 - x0 + 2 * pad, height: y1 - y0 + 2 * pad,
      }));
    }
    g.append(svg('rect', {
      class: 'box', x: x0, y: y0, width: x1 - x0, height: y1 - y0, stroke: color, fill: color,
    }));
    // labels sized to the image (the overlay's units are stored pixels, scaled to the screen)
    const size = cfg.width / 26;
    const label = svg('text', {
      x: x0, y: y0 > size ? y0 - size / 4 : y1 + size, fill: color,
      'font-size': size, 'stroke-width': size / 6,
    });
    const mark = a.verdict === 'defect' ? ' ✓' : a.verdict === 'healthy' ? ' ✗' : '';
    label.textContent = drawn ? `${a.class} (drawn)` : `${a.class} ${a.score.toFixed(2)}${mark}`;
    g.append(label);
    return g;
  }

  function renderOverlay() {
    const im = st.image;
    if (!im) {
      el.layer.replaceChildren();
      return;
    }
    const groups = im.areas.map((a, i) => areaGroup(a, i, false));
    const drawn = im.drawn.map((d) => areaGroup(d, -1, true));
    el.layer.replaceChildren(...groups, ...drawn);
  }

  function renderList() {
    const im = st.image;
    const items = (im ? im.areas : []).map((a, i) => {
      const li = document.createElement('li');
      li.dataset.areaId = a.area_id;
      li.dataset.index = String(i);
      li.dataset.verdict = a.verdict || '';
      if (i === st.cur) li.classList.add('current');
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = colorOf(a.class);
      const name = document.createElement('span');
      name.textContent = `${a.class} ${a.score.toFixed(2)}`;
      if (a.class !== a.detected_class) name.textContent += ` (was ${a.detected_class})`;
      const verdict = document.createElement('span');
      verdict.className = 'verdict';
      verdict.textContent = a.verdict ? a.verdict + (a.implied ? ' (image)' : '') : '?';
      li.append(sw, name);
      if (a.orig_bbox && im.orig_size) {
        // the box in the camera original's pixels (ingested at another resolution)
        const [x0, y0, x1, y1] = a.orig_bbox;
        const orig = document.createElement('span');
        orig.className = 'orig';
        orig.textContent = `${x0},${y0}–${x1},${y1} px of ${im.orig_size[0]}x${im.orig_size[1]}`;
        li.append(orig);
      }
      li.append(verdict);
      li.addEventListener('click', () => select(i));
      return li;
    });
    el.areas.replaceChildren(...items);
    const drawn = (im ? im.drawn : []).map((d) => {
      const li = document.createElement('li');
      li.dataset.areaId = d.area_id;
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = colorOf(d.class);
      const name = document.createElement('span');
      name.textContent = `${d.class} (drawn, ${d.cells.length} cells)`;
      const del = document.createElement('button');
      del.type = 'button';
      del.className = 'erase';
      del.textContent = '×';
      del.title = 'remove this box';
      del.addEventListener('click', () => erase(d.area_id));
      li.append(sw, name, del);
      return li;
    });
    el.drawn.replaceChildren(...drawn);
  }

  function renderState() {
    const im = st.image;
    el.canvas.dataset.imageId = im ? im.image_id : '';
    el.canvas.dataset.done = String(Boolean(im && localDone(im)));
    el.canvas.dataset.healthy = String(Boolean(im && im.healthy));
    el.title.textContent = im ? im.image_id : 'Nothing left to review';
    // the camera original, for an image ingested at another resolution
    const source = [];
    if (im && im.orig_size) source.push(`original ${im.orig_size[0]}x${im.orig_size[1]} px`);
    if (im && im.source_uri) source.push(im.source_uri);
    el.source.textContent = source.join(' · ');
    el.source.hidden = source.length === 0;
    if (!im) {
      el.state.textContent = '';
      return;
    }
    const answered = im.areas.filter((a) => a.verdict !== null).length;
    let text = `${answered}/${im.areas.length} areas answered`;
    if (im.healthy) text += ' · flagged healthy';
    if (im.drawn.length) text += ` · ${im.drawn.length} drawn`;
    if (im.areas.length === 0) text = 'no detected area: draw missed defects, then n';
    el.state.textContent = text;
  }

  function render() {
    renderOverlay();
    renderList();
    renderState();
  }

  function renderStrip() {
    const thumbs = st.following.map((f) => {
      const fig = document.createElement('figure');
      fig.className = 'thumb';
      fig.dataset.imageId = f.image_id;
      const img = document.createElement('img');
      img.src = imageUrl(f.image_id);
      img.alt = f.image_id;
      const cap = document.createElement('figcaption');
      cap.textContent = f.image_id;
      fig.append(img, cap);
      return fig;
    });
    el.strip.replaceChildren(...thumbs);
  }

  function renderProgress(s) {
    if (!s) return;
    el.progress.dataset.doneAreas = String(s.areas.done);
    el.progress.dataset.totalAreas = String(s.areas.total);
    el.progress.dataset.doneImages = String(s.images.done);
    el.progress.dataset.totalImages = String(s.images.total);
    $('progress-areas').textContent = `${s.areas.done}/${s.areas.total} areas`;
    $('progress-images').textContent = `${s.images.done}/${s.images.total} images`;
    const me = s.operators.find((o) => o.operator === cfg.operator);
    $('progress-rate').textContent = `${me ? me.areas_per_minute : 0} areas/min`;
    const rows = s.operators.map((o) => {
      const li = document.createElement('li');
      li.dataset.operator = o.operator;
      li.textContent =
        `${o.operator}: ${o.areas} areas, ${o.images} images, ` + `${o.areas_per_minute}/min`;
      return li;
    });
    el.operators.replaceChildren(...rows);
  }

  function show(im, area) {
    const same = st.image && im && st.image.image_id === im.image_id;
    st.image = im;
    if (!im) {
      el.image.removeAttribute('src');
      render();
      return;
    }
    const url = imageUrl(im.image_id);
    if (el.image.getAttribute('src') !== url) el.image.src = url;
    el.image.alt = `image ${im.image_id}`;
    if (area !== undefined) {
      const i = im.areas.findIndex((a) => a.area_id === area);
      st.cur = i >= 0 ? i : 0;
    } else if (!same) {
      const open = im.areas.findIndex((a) => a.verdict === null);
      st.cur = open >= 0 ? open : 0;
    } else {
      st.cur = Math.min(st.cur, Math.max(im.areas.length - 1, 0));
    }
    render();
  }

  function preload(images) {
    for (const f of images) new Image().src = imageUrl(f.image_id);
  }

  // -- moving through the queue -------------------------------------------------------------

  function applyNext(res) {
    const queued = st.waiting === 'pre' ? st.queued : [];
    const shown = st.image && st.image.image_id;
    st.waiting = null;
    st.queued = [];
    st.following = res.following;
    preload(res.following);
    renderStrip();
    renderProgress(res.status);
    if (!res.image) {
      show(null);
      say('Nothing left to review: export the feedback when everyone is done.');
      return;
    }
    if (res.revisit) say('Only images you skipped are left.');
    const same = shown === res.image.image_id;
    if (!same || st.pending === 0) show(res.image);
    if (same) {
      for (const key of queued) press(key); // the image is ours: the keys pressed on it
    } else if (queued.length) {
      say(`${shown} went to another operator first (your keys there were not applied): ` +
        `here is ${res.image.image_id}`, 'error');
    }
  }

  /** Ask the server for this operator's image. An answer overtaken by a later ask is only
   * progress: it names the image the operator has left since (answered before the lease came
   * back), in the state it had then, and showing it would take the operator back there. */
  function askNext(onError) {
    st.asked += 1;
    const asked = st.asked;
    send('/api/next', {}).then((res) => {
      if (asked === st.asked) applyNext(res);
      else renderProgress(res.status);
    }, (err) => {
      if (asked === st.asked) {
        st.waiting = null;
        st.queued = [];
      }
      onError(err);
    });
  }

  /** Show the prefetched image at once, and ask the server for the lease (for an image leased
   * to this operator ahead, the keys need not wait for the answer). */
  function goNext() {
    const pre = st.following.shift();
    if (pre) {
      show(pre);
      renderStrip();
    }
    const ours = pre && pre.leased_to === cfg.operator;
    st.waiting = !pre ? 'none' : ours ? null : 'pre';
    st.queued = [];
    askNext(fail);
  }

  /** After a refusal: take the server's view of what this operator works on. */
  function resync() {
    st.waiting = 'none';
    st.queued = [];
    askNext((err) => say(err.message, 'error'));
  }

  /** Send an action on the shown image; take the server's state if it is still shown. */
  function act(url, body) {
    body.request_id = requestId();
    return send(url, body).then(
      (res) => {
        if (st.pending === 0 && st.image && res.image.image_id === st.image.image_id) {
          show(res.image);
        }
        return res;
      },
      (err) => {
        fail(err);
        return null;
      },
    );
  }

  function afterAnswer() {
    if (st.image && localDone(st.image)) goNext();
    else render();
  }

  function advance() {
    const areas = st.image.areas;
    for (let k = 1; k <= areas.length; k += 1) {
      const i = (st.cur + k) % areas.length;
      if (areas[i].verdict === null) {
        st.cur = i;
        return;
      }
    }
  }

  function select(i) {
    if (!st.image || !st.image.areas.length) return;
    const n = st.image.areas.length;
    st.cur = ((i % n) + n) % n;
    render();
  }

  function verdict(v) {
    const im = st.image;
    const a = im && im.areas[st.cur];
    if (!a) return;
    if (v === 'defect' && im.healthy) {
      say('The image is flagged healthy: undo the flag (u) first.', 'error');
      return;
    }
    a.verdict = v;
    a.implied = false;
    act('/api/verdict', { image_id: im.image_id, area_id: a.area_id, verdict: v });
    advance();
    afterAnswer();
  }

  function changeClass(k) {
    const c = cfg.classes[k];
    if (!c) return;
    if (!el.picker.hidden) {
      pickClass(k);
      return;
    }
    const im = st.image;
    const a = im && im.areas[st.cur];
    if (!a) return;
    if (im.healthy) {
      say('The image is flagged healthy: undo the flag (u) first.', 'error');
      return;
    }
    a.verdict = 'defect';
    a.implied = false;
    a.class = c.name;
    act('/api/class', { image_id: im.image_id, area_id: a.area_id, class: c.name });
    advance();
    afterAnswer();
  }

  function flagHealthy() {
    const im = st.image;
    if (!im) return;
    const defects = im.areas.filter((a) => a.verdict === 'defect').length + im.drawn.length;
    if (defects) {
      say(`${defects} confirmed or drawn areas: reject or undo them before flagging.`, 'error');
      return;
    }
    im.healthy = true;
    for (const a of im.areas) {
      if (a.verdict === null) {
        a.verdict = 'healthy';
        a.implied = true;
      }
    }
    act('/api/healthy', { image_id: im.image_id });
    afterAnswer();
  }

  function skip() {
    const im = st.image;
    if (!im) return;
    act('/api/skip', { image_id: im.image_id });
    goNext();
  }

  function nextImage() {
    const im = st.image;
    if (!im) {
      goNext();
      return;
    }
    if (im.areas.length === 0 && !im.finished) {
      im.finished = true;
      act('/api/done', { image_id: im.image_id });
      goNext();
    } else if (localDone(im)) {
      goNext();
    } else {
      const open = im.areas.filter((a) => a.verdict === null).length;
      say(`${open} areas still open: answer them (d/h) or flag the image healthy (f).`, 'error');
    }
  }

  function undo() {
    // the image taken back may cost the lease of the one ahead: wait for it again
    for (const f of st.following) f.leased_to = null;
    send('/api/undo', { request_id: requestId() }).then((res) => {
      const u = res.undone;
      show(res.image, u.area_id || undefined);
      say(`Undone: ${u.kind}${u.value ? ' ' + u.value : ''} on ${u.area_id || u.image_id}`);
    }, (err) => say(err.message, 'error'));
  }

  function erase(areaId) {
    if (!st.image) return;
    act('/api/drawn/delete', { image_id: st.image.image_id, area_id: areaId });
  }

  // -- drawing a missed defect --------------------------------------------------------------

  function toImage(evt) {
    const r = el.overlay.getBoundingClientRect();
    const x = ((evt.clientX - r.left) / r.width) * cfg.width;
    const y = ((evt.clientY - r.top) / r.height) * cfg.height;
    return [Math.min(Math.max(x, 0), cfg.width), Math.min(Math.max(y, 0), cfg.height)];
  }

  function boxOf(d) {
    const x0 = Math.floor(Math.min(d.x0, d.x1));
    const y0 = Math.floor(Math.min(d.y0, d.y1));
    const x1 = Math.ceil(Math.max(d.x0, d.x1));
    const y1 = Math.ceil(Math.max(d.y0, d.y1));
    return [x0, y0, Math.min(x1, cfg.width), Math.min(y1, cfg.height)];
  }

  function showDraft(box) {
    if (!box) {
      el.draft.setAttribute('visibility', 'hidden');
      return;
    }
    const [x0, y0, x1, y1] = box;
    el.draft.setAttribute('x', String(x0));
    el.draft.setAttribute('y', String(y0));
    el.draft.setAttribute('width', String(x1 - x0));
    el.draft.setAttribute('height', String(y1 - y0));
    el.draft.setAttribute('visibility', 'visible');
  }

  el.overlay.addEventListener('pointerdown', (evt) => {
    if (evt.button !== 0 || !st.image || !el.picker.hidden || st.waiting) return;
    const [x, y] = toImage(evt);
    const hit = evt.target.closest && evt.target.closest('g[data-index]');
    st.drag = { x0: x, y0: y, x1: x, y1: y, moved: false, hit };
    el.overlay.setPointerCapture(evt.pointerId);
  });

  el.overlay.addEventListener('pointermove', (evt) => {
    if (!st.drag) return;
    [st.drag.x1, st.drag.y1] = toImage(evt);
    const far = Math.abs(st.drag.x1 - st.drag.x0) + Math.abs(st.drag.y1 - st.drag.y0);
    if (far > cfg.width / 64) st.drag.moved = true;
    if (st.drag.moved) showDraft(boxOf(st.drag));
  });

  el.overlay.addEventListener('pointerup', () => {
    const d = st.drag;
    st.drag = null;
    if (!d) return;
    if (!d.moved) {
      showDraft(null);
      if (d.hit) select(Number(d.hit.dataset.index));
      return;
    }
    const box = boxOf(d);
    if (box[2] - box[0] < 1 || box[3] - box[1] < 1) {
      showDraft(null);
      return;
    }
    st.box = box;
    el.picker.hidden = false;
  });

  function pickClass(k) {
    const c = cfg.classes[k];
    const box = st.box;
    el.picker.hidden = true;
    st.box = null;
    showDraft(null);
    if (!c || !box || !st.image) return;
    act('/api/drawn', { image_id: st.image.image_id, class: c.name, bbox: box }).then((res) => {
      const d = res && res.image.drawn.find((x) => x.area_id === res.area_id);
      if (d) say(`Drawn ${c.name}: it confirms ${d.cells.length} cells`);
    });
  }

  function cancelDraw() {
    el.picker.hidden = true;
    st.box = null;
    showDraft(null);
  }

  for (const button of el.picker.querySelectorAll('button.pick')) {
    button.addEventListener('click', () => pickClass(Number(button.dataset.classIndex) - 1));
  }

  // -- keys and buttons ---------------------------------------------------------------------

  const ACTIONS = {
    d: () => verdict('defect'),
    h: () => verdict('healthy'),
    f: flagHealthy,
    s: skip,
    u: undo,
    n: nextImage,
    Enter: nextImage,
  };
  const MOVES = {
    j: 1, ArrowDown: 1, ArrowRight: 1,
    k: -1, ArrowUp: -1, ArrowLeft: -1,
  };
  const isWorkKey = (key) => key in MOVES || key in ACTIONS || /^[1-9]$/.test(key);

  /** A key of the work (answer, move, next...): on the shown image now, or once it is ours. */
  function press(key) {
    if (!st.waiting || (key === 'u' && !st.queued.length)) {
      // an undo is about the operator's last action, wherever it was: held back only behind
      // the keys it would undo
      if (key in MOVES) select(st.cur + MOVES[key]);
      else if (key in ACTIONS) ACTIONS[key]();
      else changeClass(Number(key) - 1);
    } else if (st.waiting === 'pre') {
      st.queued.push(key);
    } // 'none': the next image is not shown yet, so the key cannot be about it
  }

  document.addEventListener('keydown', (evt) => {
    if (evt.ctrlKey || evt.metaKey || evt.altKey) return;
    const tag = evt.target && evt.target.tagName;
    if (tag === 'INPUT' || tag === 'TEXTAREA') return;
    const key = evt.key;
    if (!el.picker.hidden) {
      if (/^[1-9]$/.test(key)) pickClass(Number(key) - 1);
      else if (key === 'Escape') cancelDraw();
      evt.preventDefault();
      return;
    }
    if (key === '?') {
      el.help.hidden = !el.help.hidden;
    } else if (key === 'Escape') {
      el.help.hidden = true;
    } else if (isWorkKey(key)) {
      if (evt.repeat && !(key in MOVES)) return; // a held key answers one area, not a row
      press(key);
    } else {
      return;
    }
    evt.preventDefault();
  });

  $('btn-defect').addEventListener('click', () => press('d'));
  $('btn-healthy').addEventListener('click', () => press('h'));
  $('btn-flag').addEventListener('click', () => press('f'));
  $('btn-skip').addEventListener('click', () => press('s'));
  $('btn-undo').addEventListener('click', () => press('u'));
  $('btn-next').addEventListener('click', () => press('n'));
  $('help-button').addEventListener('click', () => {
    el.help.hidden = !el.help.hidden;
  });
  $('export-button').addEventListener('click', () => {
    send('/api/export', {}).then(
      (r) => say(`Exported ${r.items} items (${r.areas} areas, ${r.drawn} drawn) to ${r.path}`),
      (err) => say(err.message, 'error'),
    );
  });
  $('logout-button').addEventListener('click', () => {
    send('/logout', {}).finally(() => window.location.assign('/login'));
  });

  // -- start --------------------------------------------------------------------------------

  el.canvas.style.setProperty('--ratio', String(cfg.width / cfg.height));
  for (const item of document.querySelectorAll('[data-color]')) {
    const sw = item.querySelector('.swatch');
    if (sw) sw.style.background = item.dataset.color;
  }
  setInterval(() => {
    api('GET', '/api/status').then(renderProgress, () => undefined);
  }, 15000);
  askNext(fail);
})();
