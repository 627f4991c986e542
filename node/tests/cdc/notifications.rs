//! The notifications inbox's push (issue 10, items 1–2): `realtime.notifications` exists once the node
//! ran; a committed insert reaches its user as `notification.new {id, type, content, created_at}` on
//! `notifications:<user_id>`; only that user may join the channel, and a refreshed token of another
//! user ends it.

use std::time::Duration;

use realtime_proto::Vsn;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn t110_an_inserted_notification_reaches_only_its_user() {
    let db = Db::migrated("").await;
    let server = db.server(&[]);
    let (ann, ben) = (new_uuid(), new_uuid());
    let mut a = server.client(&db.token("authenticated", &ann), Vsn::V1).await;
    let topic = format!("realtime:notifications:{ann}");
    assert_eq!(a.join_with(&topic, &json!({"config": {}})).await.1["status"], "ok");
    // Ben may not listen to Ann's inbox.
    let mut b = server.client(&db.token("authenticated", &ben), Vsn::V1).await;
    assert_eq!(
        b.join_with(&topic, &json!({"config": {}})).await.1,
        json!({"status": "error", "response": {"reason": format!(
            "Unauthorized: You do not have permissions to read from this Channel topic: notifications:{ann}")}})
    );

    // The stream may still be starting: insert until the first one arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let first = loop {
        db.exec(&format!("insert into realtime.notifications (user_id, type) values ('{ann}', 'probe')"))
            .await;
        if let Some(f) = a.recv(Duration::from_millis(300)).await {
            if let Some(v) = f.value().filter(|v| v["event"] == "broadcast") {
                break v.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "notifications never pushed");
    };
    assert_eq!(first["payload"]["event"], "notification.new");
    a.drain(Duration::from_millis(300)).await;

    db.exec(&format!(
        "insert into realtime.notifications (user_id, type, content) values ('{ann}', 'mention', '{{\"by\": \"ben\"}}'), ('{ben}', 'other', '{{}}')"
    ))
    .await;
    let row = db
        .json_rows(&format!(
            "select to_jsonb(n) from realtime.notifications n where user_id = '{ann}' and type = 'mention'"
        ))
        .await
        .remove(0);
    let f = a.next_frame(T).await;
    let v = f.value().expect("a broadcast");
    assert_eq!(v["payload"]["event"], "notification.new");
    let payload = &v["payload"]["payload"];
    assert_eq!(payload["id"], row["id"]);
    assert_eq!(payload["type"], "mention");
    assert_eq!(payload["content"], json!({"by": "ben"}));
    assert!(payload["created_at"].is_string(), "{payload}");
    a.expect_silence(Duration::from_millis(300)).await;

    // Ann's channel under Ben's token: it ends.
    let join_ref = "1";
    a.push(Some(join_ref), &topic, "access_token", &json!({"access_token": db.token("authenticated", &ben)}))
        .await;
    let system = a.next_frame(T).await.value().cloned().expect("system");
    assert_eq!(
        system["payload"]["message"],
        format!("You no longer have permission to read from this Channel topic: notifications:{ann}")
    );
}
