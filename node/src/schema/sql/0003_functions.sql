-- Migration 3: the SQL API of Supabase Realtime: realtime.topic(), realtime.send(),
-- realtime.send_binary() and realtime.broadcast_changes() (PROTOCOL.md §3.7, §6.2).
--
-- Each function is created only when no function of that signature exists: a Supabase project's own
-- versions are kept as they are. Ours carry a comment naming this server, so a later migration can
-- tell which ones it may replace.
do $functions$
begin
  -- The sub-topic being authorized or sent to; policies compare it (`realtime.topic() = 'room1'`).
  if to_regprocedure('realtime.topic()') is null then
    execute $sql$
      create function realtime.topic() returns text
      language sql stable
      as $body$ select nullif(current_setting('realtime.topic', true), '') $body$
    $sql$;
    comment on function realtime.topic() is
      'realtime-node: the topic being authorized or sent to (setting realtime.topic), or null';
  end if;

  -- A broadcast from SQL. The row's id is added to a JSON object payload (unless it has one), so
  -- subscribers can tell messages apart; failures never abort the caller's transaction.
  if to_regprocedure('realtime.send(jsonb, text, text, boolean)') is null then
    execute $sql$
      create function realtime.send(payload jsonb, event text, topic text, private boolean default true)
      returns void
      language plpgsql
      as $body$
      declare
        message_id uuid := gen_random_uuid();
        body jsonb := payload;
      begin
        begin
          if jsonb_typeof(body) = 'object' and not body ? 'id' then
            body := body || jsonb_build_object('id', message_id);
          end if;
          perform set_config('realtime.topic', topic, true);
          insert into realtime.messages (id, topic, extension, event, payload, private)
          values (message_id, topic, 'broadcast', event, body, private);
        exception when others then
          raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
        end;
      end
      $body$
    $sql$;
    comment on function realtime.send(jsonb, text, text, boolean) is
      'realtime-node: broadcast payload as event to topic (a row in realtime.messages)';
  end if;

  -- The same for raw bytes (delivered to realtime-js as a binary broadcast).
  if to_regprocedure('realtime.send_binary(bytea, text, text, boolean)') is null then
    execute $sql$
      create function realtime.send_binary(payload bytea, event text, topic text, private boolean default true)
      returns void
      language plpgsql
      as $body$
      begin
        begin
          perform set_config('realtime.topic', topic, true);
          insert into realtime.messages (id, topic, extension, event, binary_payload, private)
          values (gen_random_uuid(), topic, 'broadcast', event, payload, private);
        exception when others then
          raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
        end;
      end
      $body$
    $sql$;
    comment on function realtime.send_binary(bytea, text, text, boolean) is
      'realtime-node: broadcast binary payload as event to topic (a row in realtime.messages)';
  end if;

  -- A row trigger helper: broadcasts the change as
  -- {"old_record", "record", "operation", "table", "schema"} to a private topic.
  if to_regprocedure('realtime.broadcast_changes(text, text, text, text, text, record, record, text)') is null then
    execute $sql$
      create function realtime.broadcast_changes(
        topic_name text, event_name text, operation text, table_name text, table_schema text,
        new record, old record, level text default 'ROW'
      )
      returns void
      language plpgsql
      as $body$
      begin
        if level = 'STATEMENT' then
          raise exception 'broadcast_changes needs a row trigger (FOR EACH ROW), not a statement trigger';
        end if;
        if operation not in ('INSERT', 'UPDATE', 'DELETE') then
          raise exception 'broadcast_changes: unexpected operation %', operation;
        end if;
        perform realtime.send(
          jsonb_build_object(
            'old_record', old, 'record', new, 'operation', operation,
            'table', table_name, 'schema', table_schema
          ),
          event_name,
          topic_name
        );
      exception when others then
        raise exception 'Failed to process the row: %', sqlerrm;
      end
      $body$
    $sql$;
    comment on function realtime.broadcast_changes(text, text, text, text, text, record, record, text) is
      'realtime-node: row trigger helper broadcasting a change to topic_name';
  end if;
end
$functions$;

do $grants$
declare
  grantee text;
  fn text;
begin
  foreach grantee in array array['anon', 'authenticated', 'service_role'] loop
    foreach fn in array array[
      'realtime.topic()',
      'realtime.send(jsonb, text, text, boolean)',
      'realtime.send_binary(bytea, text, text, boolean)',
      'realtime.broadcast_changes(text, text, text, text, text, record, record, text)'
    ] loop
      if not has_function_privilege(grantee, fn, 'EXECUTE') then
        execute format('grant execute on function %s to %I', fn, grantee);
      end if;
    end loop;
  end loop;
end
$grants$;
