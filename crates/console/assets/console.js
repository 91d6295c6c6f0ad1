// crmd live console. Plain JS, no dependencies, no build step.
// Data comes from the token-protected API: live events from /api/events (Server-Sent Events,
// read with fetch so the Authorization header can be sent), history from the read API.
// Every server-provided string is inserted with textContent, never as HTML.
'use strict';
(() => {
  const TOKEN_KEY = 'crmd.apiToken';
  const STALE_AFTER_MS = 20000;
  const ENDED_CARD_KEPT_MS = 8000;
  const $ = (id) => document.getElementById(id);

  let token = '';
  try { token = localStorage.getItem(TOKEN_KEY) || ''; } catch (_) { token = ''; }
  /** sid -> {call, card, parts} */
  const liveCalls = new Map();
  /** sid -> caller label (or null while unknown) */
  const callerLabels = new Map();
  let streamController = null;
  let retryMs = 1000;
  let retryTimer = null;
  let selectedContact = null;

  // ------------------------------------------------------------------ helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function localTime(ms) {
    const date = new Date(Number(ms));
    return Number.isFinite(date.getTime()) ? date.toLocaleTimeString() : '';
  }

  function localDateTime(ms) {
    const date = new Date(Number(ms));
    return Number.isFinite(date.getTime()) ? date.toLocaleString() : '';
  }

  function duration(ms) {
    const total = Math.max(0, Math.floor(Number(ms) / 1000));
    const minutes = Math.floor(total / 60);
    const seconds = String(total % 60).padStart(2, '0');
    return minutes + ':' + seconds;
  }

  /** A list out of whatever shape the read API answers with. */
  function items(value) {
    if (Array.isArray(value)) return value;
    if (value && typeof value === 'object') {
      for (const key of ['items', 'calls', 'contacts', 'messages', 'turns', 'data']) {
        if (Array.isArray(value[key])) return value[key];
      }
    }
    return [];
  }

  function authHeaders(extra) {
    return Object.assign({ Authorization: 'Bearer ' + token }, extra || {});
  }

  async function api(path, options) {
    const init = Object.assign({ cache: 'no-store' }, options || {});
    init.headers = authHeaders(options && options.headers);
    const response = await fetch(path, init);
    if (response.status === 401) {
      showLogin('The server refused this token.');
      throw new Error('unauthorized');
    }
    return response;
  }

  async function apiJson(path) {
    const response = await api(path);
    if (response.status === 404 && !path.startsWith('/api/calls/')) {
      throw new Error('This server does not offer ' + path.split('?')[0] + ' (HTTP 404).');
    }
    if (!response.ok) throw new Error(path.split('?')[0] + ': ' + (await errorText(response)));
    return response.json();
  }

  /** The API's `{"error","message"}` answer (or the plain body) as one short line. */
  async function errorText(response) {
    const body = (await response.text()).trim();
    let message = body;
    try {
      const parsed = JSON.parse(body);
      if (parsed && parsed.message) message = parsed.message;
    } catch (_) { /* plain text */ }
    return 'HTTP ' + response.status + (message ? ' — ' + message.slice(0, 200) : '');
  }

  function showError(id, error) {
    const node = $(id);
    if (!error) { node.hidden = true; node.textContent = ''; return; }
    node.hidden = false;
    node.textContent = String(error && error.message ? error.message : error);
  }

  function newIdempotencyKey() {
    if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
    return 'console-' + Date.now() + '-' + Math.random().toString(36).slice(2);
  }

  // ------------------------------------------------------------------ login

  function showLogin(message) {
    stopStream();
    document.body.dataset.stream = 'login';
    $('app').hidden = true;
    $('sign-out').hidden = true;
    $('login').hidden = false;
    showError('login-error', message || null);
    $('token-input').focus();
  }

  function start() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('sign-out').hidden = false;
    connect();
    loadRecentCalls();
    loadContacts();
  }

  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = $('token-input').value.trim();
    if (!value) return;
    token = value;
    try { localStorage.setItem(TOKEN_KEY, token); } catch (_) { /* private mode: keep in memory */ }
    $('token-input').value = '';
    start();
  });

  $('sign-out').addEventListener('click', () => {
    try { localStorage.removeItem(TOKEN_KEY); } catch (_) { /* ignore */ }
    token = '';
    showLogin(null);
  });

  // ------------------------------------------------------------------ event stream

  function setStreamStatus(state, text) {
    document.body.dataset.stream = state;
    const node = $('stream-status');
    node.className = 'status ' + state;
    node.textContent = text;
  }

  function stopStream() {
    if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
    if (streamController) { streamController.abort(); streamController = null; }
  }

  function scheduleReconnect(reason) {
    setStreamStatus('error', reason + '; retrying in ' + Math.round(retryMs / 1000) + ' s');
    retryTimer = setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 15000);
  }

  async function connect() {
    stopStream();
    const controller = new AbortController();
    streamController = controller;
    setStreamStatus('connecting', 'connecting…');
    let reason = 'disconnected';
    try {
      // `/console#call=CA…` follows one call only.
      const followed = /^#call=([A-Za-z0-9]{1,64})$/.exec(window.location.hash);
      const url = '/api/events' + (followed ? '?call=' + followed[1] : '');
      const response = await fetch(url, {
        headers: authHeaders({ Accept: 'text/event-stream' }),
        signal: controller.signal,
        cache: 'no-store',
      });
      if (response.status === 401) { showLogin('The server refused this token.'); return; }
      if (!response.ok || !response.body) {
        reason = 'events: ' + (await errorText(response));
        throw new Error(reason);
      }
      setStreamStatus('open', 'live');
      retryMs = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (handleSseBlock(block) === 'resync') { connect(); return; }
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      if (error && error.message) reason = error.message;
    }
    if (streamController === controller) scheduleReconnect(reason);
  }

  /** One SSE message: `event:` and `data:` lines; comments (keep-alives) ignored. */
  function handleSseBlock(block) {
    let name = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') name = value;
      else if (field === 'data') data.push(value);
    }
    if (data.length === 0) return null;
    let payload;
    try { payload = JSON.parse(data.join('\n')); } catch (_) { return null; }
    if (name === 'snapshot') applySnapshot(payload);
    else if (name === 'call') applyCallEvent(payload.event || {}, payload.at_ms || Date.now());
    else if (name === 'dropped') return 'resync';
    return null;
  }

  // ------------------------------------------------------------------ live calls

  function applySnapshot(snapshot) {
    for (const sid of Array.from(liveCalls.keys())) removeCard(sid);
    for (const call of items(snapshot.calls)) {
      const entry = ensureCall(call.call_sid, call.started_at_ms);
      Object.assign(entry.call, {
        state: call.state || 'UNKNOWN',
        last_event_at_ms: call.last_event_at_ms || Date.now(),
        turns: call.turns || 0,
        barge_ins: call.barge_ins || 0,
      });
      for (const line of items(call.lines)) {
        if (line.speaker === 'caller') addLine(entry, 'caller', 'caller', line.text, line.at_ms);
        else if (line.speaker === 'agent') {
          addLine(entry, 'agent', 'agent', line.text, line.at_ms);
          if (line.turn > entry.lastTurn) entry.lastTurn = line.turn;
        }
        else if (line.speaker === 'barge_in') addLine(entry, 'barge_in', 'barge-in', bargeInText(line.turn, null, line.text), line.at_ms);
      }
      setPartial(entry, call.partial || null);
      renderHead(entry);
    }
    renderLiveCount();
  }

  function ensureCall(sid, startedAtMs) {
    let entry = liveCalls.get(sid);
    if (entry) return entry;
    const card = el('article', 'call');
    card.dataset.sid = sid;
    const head = el('div', 'call-head');
    const parts = {
      caller: el('span', 'caller', callerLabels.get(sid) || 'caller …'),
      state: el('span', 'state UNKNOWN', 'UNKNOWN'),
      duration: el('span', 'duration', '0:00'),
      health: el('span', 'health', ''),
      counts: el('span', 'counts muted', ''),
      sid: el('span', 'sid', sid),
      transcript: el('ol', 'transcript'),
      partial: null,
    };
    head.append(parts.caller, parts.state, parts.duration, parts.health, parts.counts, parts.sid);
    card.append(head, parts.transcript);
    $('live-calls').append(card);
    entry = {
      call: { call_sid: sid, state: 'UNKNOWN', started_at_ms: startedAtMs || Date.now(), last_event_at_ms: Date.now(), turns: 0, barge_ins: 0, ended: false },
      card,
      parts,
      lastTurn: 0,
    };
    liveCalls.set(sid, entry);
    lookUpCaller(sid);
    renderLiveCount();
    return entry;
  }

  async function lookUpCaller(sid) {
    if (callerLabels.has(sid)) return;
    callerLabels.set(sid, null);
    try {
      const detail = await apiJson('/api/calls/' + encodeURIComponent(sid));
      const call = detail.call || detail;
      const label = [call.caller_name, call.from].filter(Boolean).join(' ');
      if (label) {
        callerLabels.set(sid, label);
        const entry = liveCalls.get(sid);
        if (entry) entry.parts.caller.textContent = label;
      }
    } catch (_) {
      const entry = liveCalls.get(sid);
      if (entry && !callerLabels.get(sid)) entry.parts.caller.textContent = 'unknown caller';
    }
  }

  function removeCard(sid) {
    const entry = liveCalls.get(sid);
    if (!entry) return;
    entry.card.remove();
    liveCalls.delete(sid);
    renderLiveCount();
  }

  function addLine(entry, kind, who, text, atMs) {
    const li = el('li', 'line-' + kind);
    li.append(el('time', null, localTime(atMs)), el('span', 'who', who));
    const body = el('span', 'text', text);
    body.dir = 'auto';
    li.append(body);
    const list = entry.parts.transcript;
    const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 20;
    if (entry.parts.partial) list.insertBefore(li, entry.parts.partial);
    else list.append(li);
    if (stick) list.scrollTop = list.scrollHeight;
    return li;
  }

  function setPartial(entry, text) {
    if (!text) {
      if (entry.parts.partial) { entry.parts.partial.remove(); entry.parts.partial = null; }
      return;
    }
    if (!entry.parts.partial) {
      entry.parts.partial = addLine(entry, 'partial', 'caller', text, Date.now());
      entry.parts.transcript.append(entry.parts.partial);
    } else {
      entry.parts.partial.querySelector('.text').textContent = text;
    }
  }

  function bargeInText(turn, latencyMs, heard) {
    let text = 'caller interrupted turn ' + (turn ?? '?');
    if (latencyMs !== null && latencyMs !== undefined) text += ' (' + latencyMs + ' ms to silence)';
    if (heard) text += ' — heard: “' + heard + '”';
    return text;
  }

  const LATENCY_LABELS = [
    ['eou_ms', 'EoU'],
    ['stt_final_lag_ms', 'STT final'],
    ['responder_first_token_ms', 'responder'],
    ['tts_first_byte_ms', 'TTS'],
    ['first_frame_after_eou_ms', 'first frame'],
    ['speech_end_to_first_frame_ms', 'speech end → audio'],
    ['twilio_clock_ms', 'Twilio clock'],
  ];

  function latencyText(turn, latency) {
    const parts = [];
    for (const [key, label] of LATENCY_LABELS) {
      if (latency && latency[key] !== null && latency[key] !== undefined) parts.push(label + ' ' + latency[key] + ' ms');
    }
    return 'turn ' + turn + ' latency: ' + (parts.length ? parts.join(' · ') : 'n/a');
  }

  function effectText(effect) {
    if (!effect || typeof effect !== 'object') return String(effect);
    const kind = String(effect.effect || effect.type || 'effect').replace(/_/g, ' ');
    const details = Object.entries(effect)
      .filter(([key, value]) => key !== 'effect' && value !== null && value !== undefined)
      .map(([key, value]) => key.replace(/_/g, ' ') + ': ' + value);
    return kind + (details.length ? ' — ' + details.join(', ') : '');
  }

  function applyCallEvent(event, atMs) {
    const sid = event.call_sid;
    if (!sid) return;
    if (event.type === 'call_ended') {
      const entry = liveCalls.get(sid);
      if (entry) {
        entry.call.ended = true;
        entry.call.state = 'ENDED';
        setPartial(entry, null);
        const reason = event.end_reason && event.end_reason.reason ? event.end_reason.reason.replace(/_/g, ' ') : 'ended';
        addLine(entry, 'effect', 'end', reason + ' after ' + duration(event.duration_ms || 0), atMs);
        renderHead(entry);
        setTimeout(() => { if (liveCalls.get(sid) === entry) removeCard(sid); }, ENDED_CARD_KEPT_MS);
      }
      setTimeout(loadRecentCalls, 1000);
      return;
    }
    const entry = ensureCall(sid, event.type === 'call_started' ? atMs : undefined);
    entry.call.last_event_at_ms = atMs;
    switch (event.type) {
      case 'call_started':
        entry.call.started_at_ms = atMs;
        break;
      case 'state_changed':
        entry.call.state = event.to || 'UNKNOWN';
        break;
      case 'transcript':
        if (event.is_final) {
          setPartial(entry, null);
          if (event.text && event.text.trim()) addLine(entry, 'caller', 'caller', event.text, atMs);
        } else {
          setPartial(entry, event.text || '…');
        }
        break;
      case 'agent_text':
        if (event.turn > entry.lastTurn) { entry.lastTurn = event.turn; entry.call.turns += 1; }
        addLine(entry, 'agent', event.kind === 'reply' ? 'agent' : (event.kind || 'agent'), event.text, atMs);
        break;
      case 'barge_in':
        entry.call.barge_ins += 1;
        addLine(entry, 'barge_in', 'barge-in', bargeInText(event.turn, event.latency_ms, event.heard_text), atMs);
        break;
      case 'latency':
        addLine(entry, 'latency', 'latency', latencyText(event.turn, event.latency), atMs);
        break;
      case 'effect':
        addLine(entry, 'effect', 'effect', effectText(event.effect), atMs);
        break;
      default:
        break;
    }
    renderHead(entry);
  }

  function renderHead(entry) {
    const call = entry.call;
    entry.parts.state.className = 'state ' + call.state;
    entry.parts.state.textContent = call.state;
    entry.parts.counts.textContent = call.turns + ' turns · ' + call.barge_ins + ' barge-ins';
    renderClock(entry, Date.now());
  }

  function renderClock(entry, now) {
    const call = entry.call;
    if (!call.ended) entry.parts.duration.textContent = duration(now - call.started_at_ms);
    const quietMs = now - call.last_event_at_ms;
    const stale = !call.ended && quietMs > STALE_AFTER_MS;
    entry.parts.health.className = 'health' + (stale ? ' stale' : '');
    entry.parts.health.textContent = call.ended ? '' : (stale ? 'no events for ' + duration(quietMs) : 'stream ok');
  }

  function renderLiveCount() {
    $('live-count').textContent = String(Array.from(liveCalls.values()).filter((e) => !e.call.ended).length);
    $('no-live').hidden = liveCalls.size > 0;
  }

  setInterval(() => {
    const now = Date.now();
    for (const entry of liveCalls.values()) renderClock(entry, now);
  }, 1000);

  // ------------------------------------------------------------------ recent calls

  async function loadRecentCalls() {
    if (!token) return;
    try {
      const page = await apiJson('/api/calls?limit=25');
      showError('recent-error', null);
      const list = $('recent-calls');
      list.replaceChildren();
      for (const call of items(page)) {
        const li = el('li');
        const who = el('span', null, [call.caller_name, call.from].filter(Boolean).join(' ') || call.call_sid);
        who.dir = 'auto';
        const meta = el('span', 'meta', localDateTime(call.started_at_ms) + (call.duration_ms ? ' · ' + duration(call.duration_ms) : '') + (call.status ? ' · ' + call.status : ''));
        li.append(who, meta);
        li.addEventListener('click', () => {
          for (const other of list.children) other.classList.remove('selected');
          li.classList.add('selected');
          showCallDetail(call.call_sid);
        });
        list.append(li);
      }
      if (!list.children.length) list.append(el('li', 'muted', 'No calls yet.'));
    } catch (error) {
      showError('recent-error', error);
    }
  }

  async function showCallDetail(sid) {
    $('call-detail').hidden = false;
    $('call-detail-title').textContent = sid;
    const turnsList = $('call-detail-turns');
    turnsList.replaceChildren();
    const audio = $('call-recording');
    if (audio.src && audio.src.startsWith('blob:')) URL.revokeObjectURL(audio.src);
    audio.hidden = true;
    audio.removeAttribute('src');
    $('call-recording-note').hidden = true;
    try {
      const detail = await apiJson('/api/calls/' + encodeURIComponent(sid));
      const call = detail.call || {};
      $('call-detail-title').textContent = ([call.caller_name, call.from].filter(Boolean).join(' ') || sid) + ' · ' + localDateTime(call.started_at_ms);
      for (const turn of items(detail.turns)) {
        const li = el('li', 'line-' + (turn.speaker === 'caller' ? 'caller' : 'agent'));
        li.append(el('time', null, localTime(turn.started_at_ms)), el('span', 'who', turn.speaker || ''));
        const body = el('span', 'text', turn.interrupted && turn.heard_text ? turn.heard_text + ' …(interrupted)' : turn.text);
        body.dir = 'auto';
        li.append(body);
        turnsList.append(li);
      }
      if (!turnsList.children.length) turnsList.append(el('li', 'muted', 'No transcript stored.'));
      if (!detail.recording) {
        $('call-recording-note').hidden = false;
        $('call-recording-note').textContent = 'No recording for this call.';
        return;
      }
      const response = await api('/api/calls/' + encodeURIComponent(sid) + '/recording');
      if (response.ok) {
        audio.src = URL.createObjectURL(await response.blob());
        audio.hidden = false;
      } else {
        $('call-recording-note').hidden = false;
        $('call-recording-note').textContent = response.status === 404 ? 'No recording for this call.' : 'Recording unavailable (HTTP ' + response.status + ').';
      }
    } catch (error) {
      turnsList.replaceChildren(el('li', 'error', String(error.message || error)));
    }
  }

  $('recent-refresh').addEventListener('click', loadRecentCalls);

  // ------------------------------------------------------------------ WhatsApp

  async function loadContacts() {
    if (!token) return;
    try {
      const page = await apiJson('/api/contacts?limit=50');
      showError('contacts-error', null);
      const list = $('contacts');
      list.replaceChildren();
      for (const contact of items(page)) {
        const li = el('li');
        const name = el('span', null, contact.display_name || contact.phone_e164);
        name.dir = 'auto';
        li.append(name, el('span', 'meta', contact.display_name ? contact.phone_e164 : localDateTime(contact.last_seen_at_ms)));
        li.addEventListener('click', () => {
          for (const other of list.children) other.classList.remove('selected');
          li.classList.add('selected');
          showConversation(contact);
        });
        list.append(li);
      }
      if (!list.children.length) list.append(el('li', 'muted', 'No contacts yet.'));
    } catch (error) {
      showError('contacts-error', error);
    }
  }

  async function showConversation(contact) {
    selectedContact = contact;
    $('conversation').hidden = false;
    $('conversation-title').textContent = (contact.display_name ? contact.display_name + ' · ' : '') + contact.phone_e164;
    const list = $('messages');
    list.replaceChildren();
    try {
      const page = await apiJson('/api/messages?contact=' + encodeURIComponent(contact.phone_e164) + '&limit=100');
      const messages = items(page).slice().sort((a, b) => (a.created_at_ms || 0) - (b.created_at_ms || 0));
      for (const message of messages) {
        const li = el('li', 'msg-' + (message.direction || 'inbound'));
        li.append(el('time', null, localDateTime(message.created_at_ms)), el('span', 'who', message.direction === 'outbound' ? 'us' : 'them'));
        const body = el('span', 'text', message.body || (message.media && message.media.length ? '[attachment]' : ''));
        body.dir = 'auto';
        li.append(body, el('span', 'meta', message.status || ''));
        list.append(li);
      }
      if (!list.children.length) list.append(el('li', 'muted', 'No messages yet.'));
      list.scrollTop = list.scrollHeight;
    } catch (error) {
      list.replaceChildren(el('li', 'error', String(error.message || error)));
    }
  }

  $('send-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!selectedContact) return;
    const text = $('send-body').value.trim();
    if (!text) return;
    const status = $('send-status');
    status.className = 'muted';
    status.textContent = 'sending…';
    try {
      const response = await api('/api/whatsapp/send', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Idempotency-Key': newIdempotencyKey() },
        body: JSON.stringify({ to: selectedContact.phone_e164, body: text }),
      });
      if (response.ok) {
        $('send-body').value = '';
        status.textContent = 'sent';
        showConversation(selectedContact);
      } else {
        status.className = 'error';
        status.textContent = 'not sent: ' + (await errorText(response));
      }
    } catch (error) {
      status.className = 'error';
      status.textContent = 'not sent: ' + String(error.message || error);
    }
  });

  $('contacts-refresh').addEventListener('click', loadContacts);

  // ------------------------------------------------------------------ boot

  window.addEventListener('hashchange', () => { if (token) connect(); });

  if (token) start(); else showLogin(null);
})();
