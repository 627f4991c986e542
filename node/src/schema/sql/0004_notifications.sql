-- Migration 4: realtime.notifications, the per-user inbox (issue 10).
--
-- Backends create notifications with plain SQL in their own transactions; the node streams the
-- inserts from the WAL (they are published with realtime.messages) and pushes each to the channel
-- notifications:<user_id> as a `notification.new` broadcast. Reading, marking read and deleting go
-- through the node, which checks that the caller owns the row.
create table if not exists realtime.notifications (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  type text not null,
  content jsonb not null default '{}',
  read_at timestamptz,
  created_at timestamptz not null default now()
);

create index if not exists notifications_user_id_created_at_index
  on realtime.notifications (user_id, created_at desc);

-- Backends insert with the service role; users never touch the table directly.
do $grants$
begin
  if not has_table_privilege('service_role', 'realtime.notifications', 'INSERT') then
    grant select, insert on realtime.notifications to service_role;
  end if;
end
$grants$;
