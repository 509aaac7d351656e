// Cloudplane's dashboard: a page that routes itself under /dashboard and works through the public JSON APIs with
// the session's bearer token, as any other client on this origin would. No third-party code; the DOM is built with
// textContent only (no HTML from data).
'use strict';

(() => {
  const BASE = '/dashboard';
  // The session's access token lives in sessionStorage: it survives a reload of this tab (deep links work) and is
  // gone when the tab closes; it is never shared with other tabs or kept on disk as localStorage would. The API
  // takes bearer tokens only (no HttpOnly cookie), so a script on this page can read it: the page's CSP lets only
  // its own script run. The refresh token is not kept: an access token renews itself before it expires.
  const SESSION_KEY = 'cloudplane.session';
  const RENEW_BEFORE_MS = 5 * 60 * 1000;
  // Polling: quick while something is changing, slow otherwise (the free tier allows 1000 requests an hour).
  const BUSY_POLL_MS = 2000;
  const IDLE_POLL_MS = 20000;

  const main = document.getElementById('main');
  const announcer = document.getElementById('announce');

  // ---- session -------------------------------------------------------------------------------------------------
  const session = {
    get() {
      try {
        return JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
      } catch (e) {
        return null;
      }
    },
    set(reply) {
      const data = reply.data || reply;
      const user = data.user || {};
      sessionStorage.setItem(SESSION_KEY, JSON.stringify({
        token: data.access_token || data.token,
        expiresAt: Date.now() + (data.expires_in || 3600) * 1000,
        email: user.email || (session.get() || {}).email || '',
      }));
    },
    clear() { sessionStorage.removeItem(SESSION_KEY); },
  };

  // ---- API -----------------------------------------------------------------------------------------------------
  // Every face's error envelope, read into one shape: a message and the fields it names.
  const readError = (status, body) => {
    const error = body && typeof body.error === 'object' && body.error !== null ? body.error : (body || {});
    const message = (typeof error.message === 'string' && error.message) ||
      (typeof body?.error === 'string' && body.error) || (body && body.message) || `The request failed (${status})`;
    const details = error.details || body?.details || {};
    const fields = {};
    for (const item of details.errors || []) {
      if (item.field) fields[String(item.field).split('.')[0]] = item.message;
    }
    if (details.field && !fields[details.field]) fields[String(details.field).split('.')[0]] = details.message || message;
    return {status, message, fields, retryAfter: 0};
  };

  let renewing = null;
  const renew = async (current) => {
    const r = await fetch('/api/v1/auth/refresh', {method: 'POST', headers: {Authorization: `Bearer ${current.token}`}});
    if (r.ok) session.set(await r.json());
  };

  async function api(method, path, body) {
    const current = session.get();
    if (current && current.expiresAt - Date.now() < RENEW_BEFORE_MS && !path.startsWith('/api/v1/auth/')) {
      renewing = renewing || renew(current).finally(() => { renewing = null; });
      await renewing;
    }
    const headers = {Accept: 'application/json'};
    const token = (session.get() || {}).token;
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
    } catch (e) {
      return {ok: false, error: {status: 0, message: 'Cloudplane cannot be reached: check your connection', fields: {}}};
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (response.ok) return {ok: true, status: response.status, data, headers: response.headers};
    const error = readError(response.status, data);
    error.retryAfter = Number(response.headers.get('Retry-After') || 0);
    if (response.status === 401 && token && !path.startsWith('/api/v1/auth/')) {
      session.clear();
      go(`${BASE}/sign-in?next=${encodeURIComponent(location.pathname)}`, 'Your session ended: sign in again.');
    }
    return {ok: false, status: response.status, error};
  }

  // ---- DOM helpers ---------------------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
      else if (key === 'class') el.className = value;
      else if (key in el && typeof value !== 'string') el[key] = value;
      else el.setAttribute(key, value === true ? '' : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  // replaceChildren, leaving out what is not shown (null, false).
  const fill = (el, ...children) => el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  const link = (href, text, attrs) => h('a', {href, 'data-route': '', ...attrs}, text);
  const announce = (text) => { announcer.textContent = ''; setTimeout(() => { announcer.textContent = text; }, 50); };

  // A form field with its label, hint and the place its error is shown.
  function field(name, label, control, hint) {
    control.id = control.id || `f-${name}`;
    control.name = name;
    const error = h('p', {class: 'field-error', id: `${control.id}-error`, hidden: true});
    const hintEl = hint ? h('p', {class: 'hint', id: `${control.id}-hint`}, hint) : null;
    control.setAttribute('aria-describedby', [hintEl && hintEl.id, error.id].filter(Boolean).join(' '));
    return h('div', {class: 'field', 'data-field': name}, h('label', {for: control.id}, label), control, hintEl, error);
  }

  // Shows an API error: each field's message beside its field, the rest above the form.
  function showErrors(form, error) {
    clearErrors(form);
    let first = null;
    let unplaced = [];
    for (const [name, message] of Object.entries(error.fields || {})) {
      const wrap = form.querySelector(`[data-field="${CSS.escape(name)}"]`);
      if (!wrap) { unplaced.push(message); continue; }
      const slot = wrap.querySelector('.field-error');
      slot.textContent = message;
      slot.hidden = false;
      const control = wrap.querySelector('input, select, textarea');
      if (control) { control.setAttribute('aria-invalid', 'true'); first = first || control; }
    }
    const summary = form.querySelector('.form-error');
    if (!first || unplaced.length) {
      summary.textContent = first ? unplaced.join(' ') : error.message;
      summary.hidden = false;
    }
    (first || summary).focus();
  }
  function clearErrors(form) {
    for (const slot of form.querySelectorAll('.field-error, .form-error')) { slot.hidden = true; slot.textContent = ''; }
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  }
  const formError = () => h('p', {class: 'form-error', role: 'alert', tabindex: '-1', hidden: true});
  const values = (form) => Object.fromEntries(new FormData(form).entries());

  async function submitting(form, work) {
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    form.setAttribute('aria-busy', 'true');
    try { await work(); } finally { button.disabled = false; form.removeAttribute('aria-busy'); }
  }

  // ---- router --------------------------------------------------------------------------------------------------
  let leave = () => {};
  let flash = null;

  function go(path, message) {
    flash = message || null;
    history.pushState({}, '', path);
    render();
  }

  document.addEventListener('click', (event) => {
    const a = event.target.closest('a[data-route]');
    if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    go(a.getAttribute('href'));
  });
  window.addEventListener('popstate', () => render());

  const routes = [
    [/^\/sign-in$/, signIn, false],
    [/^\/register$/, register, false],
    [/^\/servers$/, serverList, true],
    [/^\/servers\/new$/, createServer, true],
    [/^\/servers\/(\d+)$/, serverDetails, true],
    [/^\/ssh-keys$/, sshKeys, true],
  ];

  function render() {
    leave();
    leave = () => {};
    const path = location.pathname.replace(/\/+$/, '').slice(BASE.length) || '/';
    const signedIn = Boolean(session.get());
    document.getElementById('nav').hidden = !signedIn;
    document.getElementById('account').hidden = !signedIn;
    document.getElementById('who').textContent = signedIn ? session.get().email : '';
    if (path === '/') {
      history.replaceState({}, '', `${BASE}/${signedIn ? 'servers' : 'sign-in'}`);
      return render();
    }
    const route = routes.find(([pattern]) => pattern.test(path));
    main.replaceChildren();
    if (!route) {
      screen('Not found', h('p', {}, 'There is no such page. ', link(`${BASE}/servers`, 'Go to your servers')));
      return;
    }
    const [pattern, view, needsSession] = route;
    if (needsSession && !signedIn) {
      history.replaceState({}, '', `${BASE}/sign-in?next=${encodeURIComponent(location.pathname)}`);
      return render();
    }
    for (const a of document.querySelectorAll('#nav a')) {
      if (path.startsWith(a.getAttribute('href').slice(BASE.length))) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    view(...pattern.exec(path).slice(1));
  }

  function screen(title, ...content) {
    document.title = `${title} · Cloudplane`;
    const heading = h('h1', {tabindex: '-1'}, title);
    const notice = flash ? h('p', {class: 'notice', role: 'status'}, flash) : null;
    flash = null;
    fill(main, heading, notice, ...content);
    heading.focus();
    return heading;
  }

  // Repeats `tick` while the screen is shown: it returns whether something is changing (poll quickly) or not.
  function poll(tick) {
    let timer = null;
    let stopped = false;
    const run = async () => {
      timer = null;
      if (stopped) return;
      if (document.hidden) { timer = setTimeout(run, 1000); return; }
      const result = await tick();
      if (stopped) return;
      const delay = result && result.retryAfter ? result.retryAfter * 1000 : (result ? BUSY_POLL_MS : IDLE_POLL_MS);
      timer = setTimeout(run, delay);
    };
    run();
    const previous = leave;
    leave = () => { previous(); stopped = true; if (timer) clearTimeout(timer); };
    return () => { if (timer) { clearTimeout(timer); run(); } };
  }

  // ---- sign-in and register ------------------------------------------------------------------------------------
  const nextPath = () => {
    const next = new URLSearchParams(location.search).get('next') || '';
    return next.startsWith(`${BASE}/`) && !next.startsWith('//') ? next : `${BASE}/servers`;
  };

  function signIn() {
    const form = h('form', {class: 'card narrow', novalidate: true},
      formError(),
      field('email', 'Email', h('input', {type: 'email', autocomplete: 'username', required: true})),
      field('password', 'Password', h('input', {type: 'password', autocomplete: 'current-password', required: true})),
      h('button', {type: 'submit', class: 'primary'}, 'Sign in'),
      h('p', {}, 'New here? ', link(`${BASE}/register${location.search}`, 'Create an account')));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      submitting(form, async () => {
        const r = await api('POST', '/api/v1/auth/login', values(form));
        if (!r.ok) return showErrors(form, r.error);
        session.set(r.data);
        go(nextPath(), 'Signed in.');
      });
    });
    screen('Sign in', form);
  }

  function register() {
    const form = h('form', {class: 'card narrow', novalidate: true},
      formError(),
      field('name', 'Name', h('input', {type: 'text', autocomplete: 'name', required: true})),
      field('email', 'Email', h('input', {type: 'email', autocomplete: 'email', required: true})),
      field('password', 'Password', h('input', {type: 'password', autocomplete: 'new-password', required: true}),
        'At least 8 characters.'),
      h('button', {type: 'submit', class: 'primary'}, 'Create account'),
      h('p', {}, 'Have an account? ', link(`${BASE}/sign-in${location.search}`, 'Sign in')));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      submitting(form, async () => {
        const body = values(form);
        if (!body.name) delete body.name;
        const r = await api('POST', '/api/v1/auth/register', body);
        if (!r.ok) return showErrors(form, r.error);
        session.set(r.data);
        go(nextPath(), 'Welcome to Cloudplane: your account is ready.');
      });
    });
    screen('Create your account', form);
  }

  document.getElementById('sign-out').addEventListener('click', async () => {
    await api('POST', '/api/v1/auth/logout');
    session.clear();
    go(`${BASE}/sign-in`, 'Signed out.');
  });

  // ---- servers -------------------------------------------------------------------------------------------------
  // What each server is busy with: its operation's id and progress, kept for this tab so a reload shows it again.
  const OPS_KEY = 'cloudplane.operations';
  const tracked = {
    all() { try { return JSON.parse(sessionStorage.getItem(OPS_KEY) || '{}'); } catch (e) { return {}; } },
    put(serverId, op) { const all = tracked.all(); all[serverId] = op; sessionStorage.setItem(OPS_KEY, JSON.stringify(all)); },
    drop(serverId) { const all = tracked.all(); delete all[serverId]; sessionStorage.setItem(OPS_KEY, JSON.stringify(all)); },
  };
  const operationOf = (r) => {
    const header = r.headers && r.headers.get('Operation-Location');
    return (r.data && r.data.operation_id) || (header ? header.split('/').pop() : null);
  };

  // Follows each tracked operation one step; true while any is unfinished.
  async function followOperations(onFailed) {
    let busy = false;
    for (const [serverId, op] of Object.entries(tracked.all())) {
      const r = await api('GET', `/api/operations/${encodeURIComponent(op.id)}`);
      if (!r.ok) { if (r.status === 404) tracked.drop(serverId); continue; }
      if (r.data.status === 'succeeded' || r.data.status === 'failed' || r.data.status === 'cancelled') {
        tracked.drop(serverId);
        if (r.data.status !== 'succeeded') onFailed(serverId, r.data.error?.message || `The ${op.kind} failed`);
        else announce(`${op.label}: ${op.kind} finished`);
      } else {
        tracked.put(serverId, {...op, progress: r.data.progress || 0});
        busy = true;
      }
    }
    return busy;
  }

  const statusWord = (s) => s.task_state || s.status;
  const badge = (s) => h('span', {class: `status status-${s.task_state ? 'busy' : s.status}`}, statusWord(s));

  function progressOf(s) {
    const op = tracked.all()[s.id];
    if (!op && !s.task_state) return null;
    const label = `${op ? op.kind : statusWord(s)} in progress`;
    const bar = h('progress', {max: 100, 'aria-label': `${s.label}: ${label}`});
    if (op) bar.value = op.progress;
    return h('div', {class: 'progress'}, bar, h('span', {}, op ? `${label}: ${op.progress}%` : `${label}…`));
  }

  // Start, stop, reboot and delete: the buttons that fit the server's state.
  function actionButtons(s, refresh, afterDelete) {
    const busy = Boolean(s.task_state) || Boolean(tracked.all()[s.id]);
    const act = (kind, verb) => h('button', {
      type: 'button', disabled: busy || s.status === 'suspended',
      'aria-label': `${verb} ${s.label}`,
      onclick: async (event) => {
        event.target.disabled = true;
        const r = await api('POST', `/api/servers/${s.id}/${kind}`);
        if (!r.ok) { alertNear(event.target, r.error.message); return; }
        const id = operationOf(r);
        if (id) tracked.put(s.id, {id, kind, label: s.label, progress: 0});
        announce(`${s.label}: ${kind} requested`);
        refresh();
      },
    }, verb);
    return h('div', {class: 'actions'},
      s.status === 'stopped' ? act('start', 'Start') : null,
      s.status === 'running' ? act('stop', 'Stop') : null,
      s.status === 'running' ? act('reboot', 'Reboot') : null,
      h('button', {type: 'button', class: 'danger', 'aria-label': `Delete ${s.label}`,
        disabled: s.task_state === 'deleting',
        onclick: () => confirmDelete(s, afterDelete)}, 'Delete'));
  }

  function alertNear(element, message) {
    const container = element.closest('.actions') || element.parentElement;
    let slot = container.nextElementSibling;
    if (!slot || !slot.classList.contains('row-error')) {
      slot = h('p', {class: 'row-error', role: 'alert'});
      container.after(slot);
    }
    slot.textContent = message;
    element.disabled = false;
  }

  // A modal dialog (keyboard: Tab stays inside, Escape cancels) that asks before something is destroyed; `action`
  // returns an error message, or nothing when it is done.
  function confirmDialog(title, text, confirmLabel, action) {
    const error = h('p', {class: 'form-error', role: 'alert', hidden: true});
    const cancel = h('button', {type: 'button', class: 'secondary'}, 'Cancel');
    const confirm = h('button', {type: 'button', class: 'danger'}, confirmLabel);
    const dialog = h('dialog', {'aria-labelledby': 'confirm-title', class: 'confirm'},
      h('h2', {id: 'confirm-title'}, title), h('p', {}, text), error, h('div', {class: 'actions'}, cancel, confirm));
    cancel.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => dialog.remove());
    confirm.addEventListener('click', async () => {
      confirm.disabled = true;
      const message = await action();
      if (message) { error.textContent = message; error.hidden = false; confirm.disabled = false; return; }
      dialog.close();
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  }

  function confirmDelete(s, afterDelete) {
    confirmDialog(`Delete ${s.label}?`, `The server ${s.hostname} and its disk are destroyed. This cannot be undone.`,
      `Delete ${s.label}`, async () => {
        const r = await api('DELETE', `/api/servers/${s.id}`);
        if (!r.ok) return r.error.message;
        tracked.drop(s.id);
        announce(`${s.label} is being deleted`);
        afterDelete();
        return null;
      });
  }

  // A table cell that a phone shows as a labelled line of its server's card.
  const cell = (label, ...content) => h('td', {'data-label': label}, h('div', {}, ...content));

  function serverList() {
    const table = h('table', {class: 'servers'},
      h('caption', {class: 'visually-hidden'}, 'Your servers'),
      h('thead', {}, h('tr', {}, ['Name', 'Status', 'Address', 'Plan', 'Location', 'Actions'].map(
        (t) => h('th', {scope: 'col'}, t)))));
    const body = h('tbody', {});
    table.append(body);
    const empty = h('p', {class: 'empty', hidden: true}, 'No servers yet. Create one to get started.');
    const problem = h('p', {class: 'form-error', role: 'alert', hidden: true});
    const failures = {};
    screen('Servers',
      h('div', {class: 'toolbar'}, link(`${BASE}/servers/new`, 'Create server', {class: 'button primary'})),
      problem, empty, h('div', {class: 'table-wrap'}, table));

    const refresh = poll(async () => {
      const followed = await followOperations((id, message) => { failures[id] = message; });
      const r = await api('GET', '/api/servers?per_page=100');
      if (!r.ok) {
        problem.textContent = r.error.message;
        problem.hidden = false;
        return {retryAfter: r.error.retryAfter || 10};
      }
      problem.hidden = true;
      const servers = r.data.servers;
      empty.hidden = servers.length > 0;
      table.hidden = servers.length === 0;
      body.replaceChildren(...servers.map((s) => h('tr', {'data-server': s.id},
        cell('Name', link(`${BASE}/servers/${s.id}`, s.label), h('div', {class: 'sub'}, s.hostname)),
        cell('Status', badge(s), progressOf(s),
          failures[s.id] ? h('p', {class: 'row-error', role: 'alert'}, failures[s.id]) : null),
        cell('Address', s.ip_address || '—'),
        cell('Plan', s.plan.name),
        cell('Location', s.location.name),
        cell('Actions', actionButtons(s, () => refresh(), () => refresh())))));
      return followed || servers.some((s) => s.task_state);
    });
  }

  async function createServer() {
    const form = h('form', {class: 'card', novalidate: true}, formError(), h('p', {}, 'Loading the catalog…'));
    screen('Create a server', form);
    const [plans, images, locations, keys] = await Promise.all(
      ['/api/plans', '/api/images', '/api/locations', '/api/ssh-keys?per_page=100'].map((p) => api('GET', p)));
    const failed = [plans, images, locations, keys].find((r) => !r.ok);
    if (failed) { form.replaceChildren(h('p', {class: 'form-error', role: 'alert'}, failed.error.message)); return; }
    const options = (items, text) => items.filter((i) => i.available !== false)
      .map((i) => h('option', {value: i.slug}, text(i)));
    const keyChoices = keys.data.ssh_keys.length
      ? h('fieldset', {class: 'field', 'data-field': 'ssh_keys'},
        h('legend', {}, 'SSH keys'),
        keys.data.ssh_keys.map((k) => h('label', {class: 'check'},
          h('input', {type: 'checkbox', name: 'ssh_keys', value: String(k.id)}), ` ${k.title}`)),
        h('p', {class: 'field-error', hidden: true}))
      : h('p', {class: 'hint'}, 'No SSH keys yet: ', link(`${BASE}/ssh-keys`, 'add one'),
        ' to sign in without a password.');
    fill(form,
      formError(),
      field('label', 'Name', h('input', {type: 'text', required: true, maxlength: 255})),
      field('hostname', 'Hostname', h('input', {type: 'text', required: true, autocapitalize: 'off',
        spellcheck: 'false'}), 'Letters, digits and hyphens, e.g. web-1.'),
      field('plan_slug', 'Plan', h('select', {required: true}, options(plans.data.plans,
        (p) => `${p.name}: ${p.cpu} vCPU, ${p.ram / 1024} GB RAM, ${p.disk} GB disk, $${p.price}/month`))),
      field('image_slug', 'Image', h('select', {required: true}, options(images.data.images, (i) => i.name))),
      field('location_slug', 'Location', h('select', {required: true}, options(locations.data.locations,
        (l) => `${l.name} (${l.country})`))),
      keyChoices,
      h('div', {class: 'actions'}, h('button', {type: 'submit', class: 'primary'}, 'Create server'),
        link(`${BASE}/servers`, 'Cancel', {class: 'button secondary'})));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      submitting(form, async () => {
        const data = new FormData(form);
        const body = values(form);
        body.ssh_keys = data.getAll('ssh_keys').map(Number);
        const r = await api('POST', '/api/servers', body);
        if (!r.ok) return showErrors(form, r.error);
        tracked.put(r.data.id, {id: operationOf(r), kind: 'create', label: r.data.label, progress: 0});
        go(`${BASE}/servers`, r.data.root_password
          ? `${r.data.label} is being created. Its root password, shown only now: ${r.data.root_password}`
          : `${r.data.label} is being created.`);
      });
    });
    form.querySelector('input').focus();
  }

  function serverDetails(id) {
    const heading = screen('Server');
    const body = h('div', {class: 'details'}, h('p', {}, 'Loading…'));
    const consoleArea = h('div', {class: 'console-area'});
    const failures = {};
    main.append(h('p', {}, link(`${BASE}/servers`, '← All servers')), body, consoleArea);

    const refresh = poll(async () => {
      const followed = await followOperations((sid, message) => { failures[sid] = message; });
      const r = await api('GET', `/api/servers/${encodeURIComponent(id)}`);
      if (!r.ok) {
        body.replaceChildren(h('p', {class: 'form-error', role: 'alert'}, r.status === 404
          ? 'This server does not exist, or it was deleted.' : r.error.message));
        return r.status === 404 ? false : {retryAfter: r.error.retryAfter || 10};
      }
      const s = r.data;
      heading.textContent = s.label;
      document.title = `${s.label} · Cloudplane`;
      const row = (term, ...value) => [h('dt', {}, term), h('dd', {}, ...value)];
      fill(body,
        h('div', {class: 'status-line'}, badge(s), progressOf(s)),
        failures[s.id] ? h('p', {class: 'row-error', role: 'alert'}, failures[s.id]) : null,
        actionButtons(s, () => refresh(), () => go(`${BASE}/servers`, `${s.label} is being deleted.`)),
        h('dl', {},
          row('Hostname', s.hostname),
          row('Public IPv4', s.ip_address || 'not assigned yet'),
          row('Private IPv4', s.private_ip || 'none'),
          row('Plan', `${s.plan.name}: ${s.plan.cpu} vCPU, ${s.plan.ram / 1024} GB RAM, ${s.plan.disk} GB disk`),
          row('Price', `$${s.plan.price} a month`),
          row('Image', s.image.name),
          row('Location', `${s.location.name}, ${s.location.country}`),
          row('SSH keys', s.ssh_keys.length ? s.ssh_keys.map((k) => k.title).join(', ') : 'none'),
          row('Created', new Date(s.created_at).toLocaleString())));
      if (!consoleArea.firstChild) consoleArea.append(consoleOpener(s));
      return followed || Boolean(s.task_state);
    });
  }

  // The console page (/console/{id}) asks for a one-time password: the API gives both.
  function consoleOpener(s) {
    const out = h('div', {class: 'console-out'});
    const button = h('button', {type: 'button', onclick: async () => {
      button.disabled = true;
      const r = await api('GET', `/api/v1/vps/vps-${s.id}/console`);
      button.disabled = false;
      if (!r.ok) { out.replaceChildren(h('p', {class: 'form-error', role: 'alert'}, r.error.message)); return; }
      const c = r.data.data;
      out.replaceChildren(
        h('p', {}, 'Console password (works once): ', h('code', {class: 'secret'}, c.vnc_password)),
        h('p', {}, h('a', {href: c.console_url, target: '_blank', rel: 'noopener noreferrer', class: 'button'},
          'Open the console in a new tab')));
    }}, 'Get console access');
    return h('section', {'aria-labelledby': 'console-title'}, h('h2', {id: 'console-title'}, 'Console'),
      h('p', {class: 'hint'}, 'A terminal on the server in your browser.'), button, out);
  }

  // ---- SSH keys ------------------------------------------------------------------------------------------------
  function sshKeys() {
    const list = h('ul', {class: 'keys'});
    const problem = h('p', {class: 'form-error', role: 'alert', hidden: true});
    const form = h('form', {class: 'card', novalidate: true},
      h('h2', {}, 'Add a key'),
      formError(),
      field('title', 'Title', h('input', {type: 'text', required: true, maxlength: 200})),
      field('key', 'Public key', h('textarea', {rows: 4, required: true, spellcheck: 'false'}),
        'The line from your ~/.ssh/id_ed25519.pub (or another .pub file).'),
      h('button', {type: 'submit', class: 'primary'}, 'Add key'));
    screen('SSH keys', problem, list, form);

    const load = async () => {
      const r = await api('GET', '/api/ssh-keys?per_page=100');
      if (!r.ok) { problem.textContent = r.error.message; problem.hidden = false; return; }
      problem.hidden = true;
      list.replaceChildren(...(r.data.ssh_keys.length ? r.data.ssh_keys.map((k) => h('li', {class: 'card key'},
        h('div', {}, h('strong', {}, k.title), h('div', {class: 'sub mono'}, k.fingerprint)),
        h('button', {type: 'button', class: 'danger', 'aria-label': `Delete key ${k.title}`, onclick: () => confirmDialog(`Delete the key ${k.title}?`,
          'New servers cannot be given it any more; servers that have it keep it.', `Delete ${k.title}`, async () => {
            const d = await api('DELETE', `/api/ssh-keys/${k.id}`);
            if (!d.ok) return d.error.message;
            announce(`Key ${k.title} deleted`);
            load();
            return null;
          })}, 'Delete'))) : [h('li', {class: 'empty'}, 'No SSH keys yet.')]));
    };
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      submitting(form, async () => {
        const r = await api('POST', '/api/ssh-keys', values(form));
        if (!r.ok) return showErrors(form, r.error);
        form.reset();
        clearErrors(form);
        announce(`Key ${r.data.title} added`);
        await load();
      });
    });
    load();
  }

  render();
})();
