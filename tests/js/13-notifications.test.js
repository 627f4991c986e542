'use strict';
// 13. The notifications inbox through the real client: a row inserted into realtime.notifications
//     reaches its user as `notification.new` on `notifications:<user_id>` (both serializers); another
//     user's token may not join that channel. Needs REALTIME_TEST_DATABASE_URL; the node creates the
//     table.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const pg = require('./pg');

describe('notifications inbox', () => {
  const env = pg.usePgServer({ table: 'realtime.notifications' });

  for (const vsn of h.VERSIONS) {
    it(`vsn ${vsn}: an inserted notification reaches its user; another user may not listen`, async (t) => {
      const { db, server } = env;
      const [ann, ben] = [pg.user(), pg.user()];
      const topic = `notifications:${ann.id}`;
      const inbox = h.openChannel(h.newClient(t, server, { vsn, apikey: ann.token }), topic);
      await h.waitStatus(inbox, 'SUBSCRIBED', 10000);
      const spy = h.openChannel(h.newClient(t, server, { vsn, apikey: ben.token }), topic);
      const refused = await h.waitFor(() => spy.statuses[0], 10000, 'the other user refused');
      assert.equal(refused.status, 'CHANNEL_ERROR');
      assert.match(refused.err.message, /Unauthorized: You do not have permissions to read from this Channel topic/);

      // The stream may still be starting: insert until the first one arrives.
      await h.waitFor(
        async () => {
          await db.sql(`insert into realtime.notifications (user_id, type) values ('${ann.id}', 'probe')`);
          await h.sleep(200);
          return inbox.rx.some((m) => m.event === 'notification.new');
        },
        20000,
        'notifications pushed',
      );
      await db.sql(
        `insert into realtime.notifications (user_id, type, content) values ('${ann.id}', 'mention', '{"by": "ben"}')`,
      );
      const got = await h.waitBroadcast(inbox, 'notification.new', 10000, (m) => m.payload.type === 'mention');
      const [id] = await db.rows(`select id from realtime.notifications where type = 'mention' and user_id = '${ann.id}'`);
      assert.equal(got.payload.id, id);
      assert.deepEqual(got.payload.content, { by: 'ben' });
      assert.match(got.payload.created_at, /^\d{4}-\d{2}-\d{2}/);
    });
  }
});
