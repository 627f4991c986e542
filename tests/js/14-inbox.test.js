'use strict';
// 14. The notifications inbox's API with the real client: a client subscribed to
//     `notifications:<sub>` receives `notification.new` for a row created with
//     `POST /api/notifications` (service_role); the user lists it through GraphQL (`fetch`), marks it
//     read and deletes it; another user's token finds none of it. Needs REALTIME_TEST_DATABASE_URL.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const pg = require('./pg');

async function graphql(server, token, query, variables = {}) {
  const res = await fetch(`${server.url}/graphql`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  return { status: res.status, body: await res.json() };
}

async function createNotification(server, token, body) {
  const res = await fetch(`${server.url}/api/notifications`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

const FIELDS = 'id userId type content readAt createdAt';
const LIST = `query($unread: Boolean) { notifications(unreadOnly: $unread) { ${FIELDS} } }`;
const MARK = `mutation($id: ID!) { markNotificationRead(id: $id) { ${FIELDS} } }`;
const DELETE = 'mutation($id: ID!) { deleteNotification(id: $id) }';

describe('notifications inbox API', () => {
  const env = pg.usePgServer({ table: 'realtime.notifications' });

  it('REST insert → notification.new on the socket; GraphQL lists, marks read, deletes; others find nothing', async (t) => {

    const { server } = env;
    const [ann, ben, service] = [pg.user(), pg.user(), pg.user('service_role')];
    const inbox = h.openChannel(h.newClient(t, server, { apikey: ann.token }), `notifications:${ann.id}`);
    await h.waitStatus(inbox, 'SUBSCRIBED', 10000);

    // The stream may still be starting: create until the first push arrives.
    await h.waitFor(
      async () => {
        const probe = await createNotification(server, service.token, { user_id: ann.id, type: 'probe' });
        assert.equal(probe.status, 201, JSON.stringify(probe.body));
        await h.sleep(200);
        return inbox.rx.some((m) => m.event === 'notification.new');
      },
      20000,
      'notifications pushed',
    );
    const created = await createNotification(server, service.token, {
      user_id: ann.id,
      type: 'mention',
      content: { by: 'ben' },
    });
    assert.equal(created.status, 201);
    assert.equal(created.body.user_id, ann.id);
    assert.equal(created.body.read_at, null);
    const pushed = await h.waitBroadcast(inbox, 'notification.new', 10000, (m) => m.payload.type === 'mention');
    assert.equal(pushed.payload.id, created.body.id);
    assert.deepEqual(pushed.payload.content, { by: 'ben' });
    const id = created.body.id;

    const listed = await graphql(server, ann.token, LIST);
    assert.equal(listed.status, 200, JSON.stringify(listed.body));
    const rows = listed.body.data.notifications;
    assert.equal(rows[0].id, id, 'newest first');
    assert.equal(rows[0].userId, ann.id);
    assert.deepEqual(rows[0].content, { by: 'ben' });
    assert.equal(rows[0].createdAt, created.body.created_at);

    // Ben: none listed, Ann's id is not found for him, and nothing changes.
    assert.deepEqual((await graphql(server, ben.token, LIST)).body.data.notifications, []);
    const bensMark = await graphql(server, ben.token, MARK, { id });
    assert.equal(bensMark.body.data?.markNotificationRead ?? null, null, 'no row for him');
    assert.equal(bensMark.body.errors[0].extensions.code, 'NOT_FOUND');
    assert.equal((await graphql(server, ben.token, DELETE, { id })).body.data.deleteNotification, false);

    const marked = await graphql(server, ann.token, MARK, { id });
    assert.equal(marked.body.data.markNotificationRead.id, id);
    assert.match(marked.body.data.markNotificationRead.readAt, /^\d{4}-\d{2}-\d{2}T/);
    const unread = (await graphql(server, ann.token, LIST, { unread: true })).body.data.notifications;
    assert.ok(unread.length > 0 && unread.every((n) => n.id !== id && n.readAt === null));

    assert.equal((await graphql(server, ann.token, DELETE, { id })).body.data.deleteNotification, true);
    assert.equal((await graphql(server, ann.token, DELETE, { id })).body.data.deleteNotification, false);
    const after = (await graphql(server, ann.token, LIST)).body.data.notifications;
    assert.ok(after.every((n) => n.id !== id));
  });
});
