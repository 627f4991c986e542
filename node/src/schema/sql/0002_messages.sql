-- Migration 2: realtime.messages, the table private-channel policies are written on and that
-- realtime.send() writes broadcasts into.
--
-- Same columns, keys, defaults and partitioning as a Supabase project, so policies and triggers
-- written for Supabase work unchanged. Partitioned by day on inserted_at: the janitor creates the
-- daily partitions (realtime.messages_YYYY_MM_DD) ahead of time and drops whole expired days, which
-- is much cheaper than deleting rows.
--
-- When the table already exists (a Supabase database), nothing of it is replaced or rewritten: only
-- pieces that are missing are added, and a piece we may not add (the table belongs to another role)
-- is reported as a warning instead of failing the start-up.
create table if not exists realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp without time zone not null default now(),
  inserted_at timestamp without time zone not null default now(),
  id uuid not null default gen_random_uuid(),
  binary_payload bytea,
  constraint messages_pkey primary key (id, inserted_at),
  constraint messages_payload_exclusive check (payload is null or binary_payload is null)
) partition by range (inserted_at);

do $missing$
begin
  -- Older Supabase projects predate binary broadcasts (realtime.send_binary).
  if not exists (
    select from pg_catalog.pg_attribute
    where attrelid = 'realtime.messages'::regclass and attname = 'binary_payload' and not attisdropped
  ) then
    begin
      alter table realtime.messages add column binary_payload bytea;
    exception when insufficient_privilege then
      raise warning 'realtime.messages has no binary_payload column and this user may not add it: %', sqlerrm;
    end;
  end if;

  -- Without RLS every role could read every private message.
  if not (select relrowsecurity from pg_catalog.pg_class where oid = 'realtime.messages'::regclass) then
    alter table realtime.messages enable row level security;
  end if;

  -- Replay (PROTOCOL.md §3.8) reads a private topic's latest broadcasts.
  if to_regclass('realtime.messages_inserted_at_topic_index') is null then
    begin
      create index messages_inserted_at_topic_index on realtime.messages (inserted_at desc, topic)
        where extension = 'broadcast' and private is true;
    exception when insufficient_privilege then
      raise warning 'cannot create the replay index on realtime.messages: %', sqlerrm;
    end;
  end if;
end
$missing$;

-- The JWT roles read (read checks), insert (write checks, realtime.send as the caller) and update;
-- RLS policies, written by the application, decide which rows. We create no policy.
do $grants$
declare
  grantee text;
  privilege text;
begin
  foreach grantee in array array['anon', 'authenticated', 'service_role'] loop
    foreach privilege in array array['SELECT', 'INSERT', 'UPDATE'] loop
      if not has_table_privilege(grantee, 'realtime.messages', privilege) then
        execute format('grant %s on table realtime.messages to %I', privilege, grantee);
      end if;
    end loop;
  end loop;
end
$grants$;
