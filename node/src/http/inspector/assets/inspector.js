// The inspector page's script, served by the node at /inspector/inspector.js (see
// node/src/http/inspector/mod.rs for why it is plain JavaScript with no build step).
//
// - Cluster and Channels: polled every 2 s from /inspector/api/{cluster,channels}, with the service
//   role key in an Authorization header, while the key box holds a key the node accepts.
// - Channel view: one WebSocket to the node's own /socket/websocket, opened with the pasted token as
//   apikey, speaking Phoenix vsn 1.0.0 (JSON objects {topic, event, payload, ref, join_ref}): it joins
//   one topic, heartbeats every 25 s, sends broadcasts and presence, and lists every message it gets.
//
// Tokens live only in the input fields and in this module's variables: nothing is stored. Whatever
// arrives is written as text (textContent), never as HTML.

const POLL_MS = 2000;
const HEARTBEAT_MS = 25000;
const MAX_MESSAGES = 200;
const MAX_SHOWN_CHARS = 4000;

const $ = (id) => document.getElementById(id);

/** A URL relative to the page (/inspector), so a proxy that maps the node under a prefix keeps it. */
const here = (path) => new URL(path, window.location.href);

const clock = () => new Date().toLocaleTimeString([], { hour12: false });

// ---------------------------------------------------------------------------------------------
// DOM helpers

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ''));
  return node;
}

function table(caption, headers, rows) {
  const head = el('tr', {}, ...headers.map((h) => el('th', { scope: 'col' }, h)));
  const body = rows.map((cells) => el('tr', {}, ...cells.map((cell) => el('td', {}, cell))));
  return el('table', {}, el('caption', {}, caption), el('thead', {}, head), el('tbody', {}, ...body));
}

function status(id, text, kind = '') {
  const node = $(id);
  node.textContent = text;
  node.dataset.kind = kind;
}

/** A payload as text: on one line when short, indented when long, cut when very long. */
function shown(value) {
  const line = typeof value === 'string' ? value : JSON.stringify(value);
  const text = line.length <= 240 || typeof value === 'string' ? line : JSON.stringify(value, null, 2);
  return text.length > MAX_SHOWN_CHARS ? `${text.slice(0, MAX_SHOWN_CHARS)}… (${text.length} characters)` : text;
}

// ---------------------------------------------------------------------------------------------
// Cluster and Channels (service role key)

let pollTimer = null;
let pollGeneration = 0;

class Refusal extends Error {}

async function getJson(path, key) {
  const response = await fetch(here(path), { headers: { Authorization: `Bearer ${key}` }, cache: 'no-store' });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 || response.status === 403) throw new Refusal(`${response.status}: ${body.message}`);
  if (!response.ok) throw new Error(`${response.status}: ${body.message || response.statusText}`);
  return body;
}

/** Empties both panels: what they showed was read with a key that is gone or refused. */
function forget() {
  for (const id of ['cluster-body', 'channels-body']) $(id).replaceChildren(el('p', { class: 'hint' }, 'Nothing yet.'));
}

async function poll(generation) {
  const key = $('service-key').value.trim();
  if (!key) {
    forget();
    status('service-status', 'Type a service role key to see the cluster and channels.');
    return;
  }
  try {
    const [cluster, channels] = await Promise.all([
      getJson('inspector/api/cluster', key),
      getJson('inspector/api/channels', key),
    ]);
    if (generation !== pollGeneration) return;
    renderCluster(cluster);
    renderChannels(channels);
    status('service-status', `Live, updated ${clock()}.`, 'ok');
  } catch (error) {
    if (generation !== pollGeneration) return;
    status('service-status', `${error instanceof Refusal ? 'Refused' : 'Unreachable'}: ${error.message}`, 'error');
    if (error instanceof Refusal) {
      forget();
      return; // the same key would be refused again: wait for another
    }
  }
  pollTimer = setTimeout(() => poll(generation), POLL_MS);
}

function restartPolling() {
  pollGeneration += 1;
  clearTimeout(pollTimer);
  poll(pollGeneration);
}

function renderCluster(view) {
  const raft = view.raft;
  const members = view.members || [];
  const links = view.links || [];
  const single = !raft && members.length === 0;
  const leader = view.leader ?? (single ? `${view.node} (a single node runs CDC itself)` : 'none elected yet');
  const database = view.database == null
    ? 'not configured'
    : `${view.database.reachable ? 'reachable' : 'NOT reachable'}${view.database.error ? ` (${view.database.error})` : ''}`;
  const facts = [
    ['node', view.node],
    ['ready', view.ready ? 'yes' : 'no'],
    ['raft / CDC leader', leader],
    ['raft', raft ? `${raft.state}, term ${raft.term}, voters ${raft.voters.join(', ')}` : 'off'],
    ['database', database],
  ];
  const list = el('dl', { class: 'facts' });
  for (const [name, value] of facts) list.append(el('dt', {}, name), el('dd', {}, value));

  const memberRows = [[`${view.node} (this node)`, view.ready ? 'ready' : 'not ready', view.addr ?? '—']];
  const byName = [...members].sort((a, b) => a.node.localeCompare(b.node));
  for (const m of byName) memberRows.push([m.node, m.state, m.addr]);
  const parts = [list, table('Members', ['node', 'state', 'address'], memberRows)];
  if (links.length) {
    const rows = links.map((l) => [
      l.node, l.lane, l.connected ? 'yes' : 'no', l.queued_bytes, l.unacked_bytes,
      `${l.oldest_unacked_ms} ms`, l.stalled ? 'STALLED' : 'no',
    ]);
    const headers = ['peer', 'lane', 'connected', 'queued B', 'unacked B', 'oldest unacked', 'stalled'];
    parts.push(table('Links (lag: bytes queued and not acknowledged)', headers, rows));
  } else {
    parts.push(el('p', { class: 'hint' }, 'No peer links: a single node.'));
  }
  $('cluster-body').replaceChildren(...parts);
}

function renderChannels(list) {
  if (!list.channels.length) {
    $('channels-body').replaceChildren(el('p', { class: 'hint' }, 'No channels on this node.'));
    return;
  }
  const cut = list.channels.length < list.total ? `, the ${list.channels.length} busiest shown` : '';
  const rows = list.channels.map((c) => [c.topic, c.private ? 'private' : 'public', c.members, c.elsewhere]);
  const caption = `${list.total} on ${list.node}${cut}`;
  $('channels-body').replaceChildren(table(caption, ['topic', 'kind', 'members here', 'on other nodes'], rows));
}

// ---------------------------------------------------------------------------------------------
// Channel view (the pasted token)

const channel = { ws: null, topic: null, joinRef: null, ref: 0, heartbeat: null, joined: false };

function push(event, payload, topic = channel.topic, joinRef = channel.joinRef) {
  if (!channel.ws || channel.ws.readyState !== WebSocket.OPEN) return null;
  channel.ref += 1;
  const ref = String(channel.ref);
  channel.ws.send(JSON.stringify({ topic, event, payload, ref, join_ref: joinRef }));
  return ref;
}

/** `public.todos, public.notes:id=eq.1, public` as postgres_changes entries (every event). */
function postgresChanges(text) {
  return text.split(',').map((entry) => entry.trim()).filter(Boolean).map((entry) => {
    const colon = entry.indexOf(':');
    const relation = colon < 0 ? entry : entry.slice(0, colon);
    const filter = colon < 0 ? null : entry.slice(colon + 1);
    const [schema, table] = relation.includes('.') ? relation.split('.', 2) : [relation, null];
    const change = { event: '*', schema };
    if (table) change.table = table;
    if (filter) change.filter = filter;
    return change;
  });
}

/** The token's claims, for display only (the node verifies it). */
function claimsOf(token) {
  try {
    return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  } catch {
    return null;
  }
}

function setJoined(joined) {
  channel.joined = joined;
  $('send').disabled = !joined;
  $('track').disabled = !joined;
  $('leave').disabled = !channel.ws;
}

function disconnect() {
  clearInterval(channel.heartbeat);
  const ws = channel.ws;
  channel.ws = null;
  if (ws) ws.close(1000, 'inspector left');
  setJoined(false);
}

function join(event) {
  event.preventDefault();
  const token = $('token').value.trim();
  const name = $('topic').value.trim().replace(/^realtime:/, '');
  if (!token || !name) {
    status('join-status', 'A token and a topic are needed to join.', 'error');
    return;
  }
  const changes = postgresChanges($('changes').value);
  disconnect();
  const url = here('socket/websocket');
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = new URLSearchParams({ apikey: token, vsn: '1.0.0' }).toString();
  const topic = `realtime:${name}`;
  const ws = new WebSocket(url);
  Object.assign(channel, { ws, topic, joinRef: null, joined: false });
  setJoined(false);
  status('join-status', `Connecting to join ${topic}…`);
  ws.addEventListener('open', () => {
    if (ws !== channel.ws) return;
    const config = {
      broadcast: { self: true, ack: false },
      presence: { key: '', enabled: true },
      postgres_changes: changes,
      private: $('private').checked,
    };
    channel.joinRef = String(channel.ref + 1);
    push('phx_join', { config, access_token: token }, topic, channel.joinRef);
    channel.heartbeat = setInterval(() => push('heartbeat', {}, 'phoenix', null), HEARTBEAT_MS);
  });
  ws.addEventListener('message', (message) => {
    if (ws === channel.ws) receive(message.data);
  });
  ws.addEventListener('close', (closing) => {
    if (ws === channel.ws) closed(closing);
  });
}

function receive(data) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    addMessage('unreadable', 'a frame that is not JSON', String(data));
    return;
  }
  if (msg.topic === 'phoenix') return; // heartbeat replies
  const payload = msg.payload || {};
  if (msg.event === 'phx_reply') {
    if (msg.ref === channel.joinRef) joinReply(payload);
    else if (payload.status !== 'ok') addMessage('error', `reply ${payload.status}`, payload.response);
    return;
  }
  switch (msg.event) {
    case 'broadcast':
      addMessage('broadcast', `event ${JSON.stringify(payload.event)}`, payload.payload);
      break;
    case 'presence_state':
      addMessage('presence', `state: ${Object.keys(payload).length} present`, payload);
      break;
    case 'presence_diff': {
      const joins = Object.keys(payload.joins || {});
      const leaves = Object.keys(payload.leaves || {});
      addMessage('presence', `diff: ${joins.length} joined, ${leaves.length} left`, payload);
      break;
    }
    case 'postgres_changes': {
      const change = payload.data || {};
      addMessage('postgres_changes', `${change.type} ${change.schema}.${change.table}`, change);
      break;
    }
    case 'system':
      addMessage('system', `${payload.status ?? ''} ${payload.message ?? ''}`.trim(), payload);
      break;
    case 'phx_close':
      addMessage('closed', 'the node closed the channel', payload);
      status('join-status', `Not joined: the node closed ${msg.topic}.`, 'error');
      disconnect();
      break;
    case 'phx_error':
      addMessage('error', 'the channel failed on the node', payload);
      status('join-status', `Not joined: ${msg.topic} failed on the node.`, 'error');
      disconnect();
      break;
    default:
      addMessage(msg.event, msg.event, payload);
  }
}

function joinReply(payload) {
  if (payload.status === 'ok') {
    setJoined(true);
    const claims = claimsOf($('token').value.trim()) || {};
    const who = [claims.role && `role ${claims.role}`, claims.sub && `sub ${claims.sub}`].filter(Boolean).join(', ');
    status('join-status', `Joined ${channel.topic}${who ? ` as ${who}` : ''}.`, 'ok');
    addMessage('joined', channel.topic, payload.response);
  } else {
    const reason = (payload.response && payload.response.reason) || JSON.stringify(payload.response);
    status('join-status', `Join refused: ${reason}`, 'error');
    addMessage('error', 'join refused', payload.response);
    disconnect();
  }
}

function closed(closing) {
  const wasJoined = channel.joined;
  clearInterval(channel.heartbeat);
  channel.ws = null;
  setJoined(false);
  const why = closing.reason ? `: ${closing.reason}` : '';
  const hint = !wasJoined && closing.code === 1006
    ? ' (the node refused the connection, e.g. a bad or expired token, or it is unreachable)'
    : '';
  status('join-status', `Disconnected (close ${closing.code}${why})${hint}.`, 'error');
  addMessage('closed', `socket closed ${closing.code}${why}`);
}

function send(event) {
  event.preventDefault();
  let payload;
  try {
    payload = JSON.parse($('payload').value);
  } catch (error) {
    status('join-status', `The payload is not JSON: ${error.message}`, 'error');
    return;
  }
  const name = $('event').value.trim() || 'message';
  push('broadcast', { type: 'broadcast', event: name, payload });
}

function track() {
  const meta = { online_at: new Date().toISOString(), by: 'inspector' };
  push('presence', { type: 'presence', event: 'track', payload: meta });
}

function leave() {
  if (channel.joined) push('phx_leave', {});
  disconnect();
  status('join-status', 'Not joined.');
}

function addMessage(kind, summary, payload) {
  const list = $('message-list');
  const item = el('li', { class: 'message', 'data-kind': kind },
    el('time', {}, clock()), el('span', { class: 'kind' }, kind), el('span', { class: 'summary' }, summary));
  if (payload !== undefined) item.append(el('pre', {}, shown(payload)));
  list.prepend(item);
  while (list.children.length > MAX_MESSAGES) list.lastElementChild.remove();
}

// ---------------------------------------------------------------------------------------------

let keyTimer = null;
$('service-key').addEventListener('input', () => {
  clearTimeout(keyTimer);
  keyTimer = setTimeout(restartPolling, 300);
});
$('join-form').addEventListener('submit', join);
$('send-form').addEventListener('submit', send);
$('leave').addEventListener('click', leave);
$('track').addEventListener('click', track);
$('clear').addEventListener('click', () => $('message-list').replaceChildren());
