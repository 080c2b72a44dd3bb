package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oxide-ci/oxide/internal/store"
)

type agents struct{ *conn }

const agentCols = `id, name, labels, status, version, os, arch, capacity, cpu_millis, memory_bytes, gpus, last_heartbeat_at, registered_at`

func scanAgent(r pgx.Row) (store.Agent, error) {
	var a store.Agent
	err := r.Scan(&a.ID, &a.Name, &a.Labels, &a.Status, &a.Version, &a.OS, &a.Arch, &a.Capacity, &a.CPUMillis, &a.MemoryBytes, &a.GPUs, &a.LastHeartbeatAt, &a.RegisteredAt)
	a.Labels = nilIfEmpty(a.Labels)
	return a, err
}

func (t agents) Register(ctx context.Context, a store.Agent) (store.Agent, error) {
	if a.ID == "" {
		a.ID = store.NewID()
	}
	if a.Capacity == 0 {
		a.Capacity = 1
	}
	if a.Capacity < 0 || a.CPUMillis < 0 || a.MemoryBytes < 0 || a.GPUs < 0 {
		return a, fmt.Errorf("%w: agent capacity %d, cpu %dm, memory %d, gpus %d", store.ErrInvalid, a.Capacity, a.CPUMillis, a.MemoryBytes, a.GPUs)
	}
	var out store.Agent
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanAgent(q.QueryRow(ctx, `INSERT INTO agents (id, name, labels, status, version, os, arch, capacity,
				cpu_millis, memory_bytes, gpus, last_heartbeat_at, registered_at)
			VALUES ($1, $2, $3, 'online', $4, $5, $6, $7, $8, $9, $10, now(), now())
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, labels = excluded.labels, status = 'online',
				version = excluded.version, os = excluded.os, arch = excluded.arch, capacity = excluded.capacity,
				cpu_millis = excluded.cpu_millis, memory_bytes = excluded.memory_bytes, gpus = excluded.gpus,
				last_heartbeat_at = now()
			RETURNING `+agentCols, a.ID, a.Name, nonNil(a.Labels), a.Version, a.OS, a.Arch, a.Capacity, a.CPUMillis, a.MemoryBytes, a.GPUs))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "agent", out.ID, "registered", out)
	})
	return out, err
}

func (t agents) Get(ctx context.Context, id string) (a store.Agent, err error) {
	err = t.read(ctx, func(q querier) error {
		a, err = scanAgent(q.QueryRow(ctx, `SELECT `+agentCols+` FROM agents WHERE id = $1`, id))
		return err
	})
	return a, err
}

func (t agents) List(ctx context.Context) (as []store.Agent, err error) {
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT `+agentCols+` FROM agents ORDER BY name, id`)
		as, err = all(rows, err, scanAgent)
		return err
	})
	return as, err
}

func (t agents) Heartbeat(ctx context.Context, id string) error {
	return t.write(ctx, func(q querier) error {
		tag, err := q.Exec(ctx, `UPDATE agents SET last_heartbeat_at = now() WHERE id = $1`, id)
		if err == nil && tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		return err
	})
}

func (t agents) SetStatus(ctx context.Context, id string, status store.AgentStatus) (store.Agent, error) {
	if !status.Valid() {
		return store.Agent{}, fmt.Errorf("%w: agent status %q", store.ErrInvalid, status)
	}
	var out store.Agent
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanAgent(q.QueryRow(ctx, `UPDATE agents SET status = $2 WHERE id = $1 RETURNING `+agentCols, id, status))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "agent", out.ID, string(out.Status), out)
	})
	return out, err
}

// silent is the condition of Agents.Silent, with parameter $1 the silence
// in seconds.
const silent = `last_heartbeat_at < now() - make_interval(secs => $1) AND (status IN ('online', 'busy', 'draining') OR
	status = 'offline' AND EXISTS (SELECT 1 FROM jobs WHERE jobs.worker_id = agents.id AND jobs.state IN ('assigned', 'running')))`

func (t agents) Silent(ctx context.Context, silence time.Duration) (as []store.Agent, err error) {
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT `+agentCols+` FROM agents WHERE `+silent+` ORDER BY name, id`, silence.Seconds())
		as, err = all(rows, err, scanAgent)
		return err
	})
	return as, err
}

func (t agents) MarkLost(ctx context.Context, id string, silence time.Duration) (a store.Agent, err error) {
	err = t.write(ctx, func(q querier) error {
		a, err = scanAgent(q.QueryRow(ctx, `UPDATE agents SET status = 'lost' WHERE id = $2 AND `+silent+`
			RETURNING `+agentCols, silence.Seconds(), id))
		if errors.Is(err, pgx.ErrNoRows) {
			return missing(ctx, q, "agents", id)
		}
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "agent", a.ID, "lost", a)
	})
	return a, err
}

func (t agents) Delete(ctx context.Context, id string) error {
	return t.write(ctx, func(q querier) error {
		a, err := scanAgent(q.QueryRow(ctx, `DELETE FROM agents WHERE id = $1 RETURNING `+agentCols, id))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "agent", a.ID, "deleted", a)
	})
}

type secrets struct{ *conn }

const secretCols = `scope, scope_id, name, ciphertext, created_at, updated_at`

func scanSecret(r pgx.Row) (store.Secret, error) {
	var s store.Secret
	err := r.Scan(&s.Scope, &s.ScopeID, &s.Name, &s.Ciphertext, &s.CreatedAt, &s.UpdatedAt)
	return s, err
}

// secretID is a secret's aggregate ID in events.
func secretID(k store.SecretKey) string { return string(k.Scope) + "/" + k.ScopeID + "/" + k.Name }

func validSecretKey(k store.SecretKey) error {
	switch k.Scope {
	case store.ScopeOrganization, store.ScopeProject, store.ScopePipeline:
	default:
		return fmt.Errorf("%w: secret scope %q", store.ErrInvalid, k.Scope)
	}
	if k.Name == "" {
		return fmt.Errorf("%w: secret without a name", store.ErrInvalid)
	}
	return nil
}

func (t secrets) Put(ctx context.Context, s store.Secret) (store.Secret, error) {
	if err := validSecretKey(s.SecretKey); err != nil {
		return s, err
	}
	if s.Ciphertext == nil {
		return s, fmt.Errorf("%w: secret without ciphertext", store.ErrInvalid)
	}
	var out store.Secret
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanSecret(q.QueryRow(ctx, `INSERT INTO secrets (scope, scope_id, name, ciphertext, created_at, updated_at)
			VALUES ($1, $2, $3, $4, now(), now())
			ON CONFLICT (scope, scope_id, name) DO UPDATE SET ciphertext = excluded.ciphertext, updated_at = now()
			RETURNING `+secretCols, s.Scope, s.ScopeID, s.Name, s.Ciphertext))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "secret", secretID(out.SecretKey), "saved", out)
	})
	return out, err
}

func (t secrets) Get(ctx context.Context, k store.SecretKey) (s store.Secret, err error) {
	err = t.read(ctx, func(q querier) error {
		s, err = scanSecret(q.QueryRow(ctx, `SELECT `+secretCols+` FROM secrets WHERE scope = $1 AND scope_id = $2 AND name = $3`,
			k.Scope, k.ScopeID, k.Name))
		return err
	})
	return s, err
}

func (t secrets) List(ctx context.Context, scope store.SecretScope, scopeID string) (ss []store.Secret, err error) {
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT scope, scope_id, name, NULL::bytea, created_at, updated_at FROM secrets
			WHERE scope = $1 AND scope_id = $2 ORDER BY name`, scope, scopeID)
		ss, err = all(rows, err, scanSecret)
		return err
	})
	return ss, err
}

func (t secrets) Delete(ctx context.Context, k store.SecretKey) error {
	return t.write(ctx, func(q querier) error {
		s, err := scanSecret(q.QueryRow(ctx, `DELETE FROM secrets WHERE scope = $1 AND scope_id = $2 AND name = $3 RETURNING `+secretCols,
			k.Scope, k.ScopeID, k.Name))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "secret", secretID(s.SecretKey), "deleted", s)
	})
}

type cache struct{ *conn }

const cacheCols = `scope, key, size_bytes, path, created_at, last_used_at, expires_at`

func scanCache(r pgx.Row) (store.CacheEntry, error) {
	var e store.CacheEntry
	err := r.Scan(&e.Scope, &e.Key, &e.Size, &e.Path, &e.CreatedAt, &e.LastUsedAt, &e.ExpiresAt)
	return e, err
}

func cacheID(e store.CacheEntry) string { return e.Scope + "/" + e.Key }

func (t cache) Put(ctx context.Context, e store.CacheEntry) (store.CacheEntry, error) {
	if e.Key == "" || e.Path == "" {
		return e, fmt.Errorf("%w: cache entry needs a key and a path", store.ErrInvalid)
	}
	var out store.CacheEntry
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanCache(q.QueryRow(ctx, `INSERT INTO cache_entries (scope, key, size_bytes, path, created_at, last_used_at, expires_at)
			VALUES ($1, $2, $3, $4, now(), now(), $5)
			ON CONFLICT (scope, key) DO UPDATE SET size_bytes = excluded.size_bytes, path = excluded.path,
				created_at = now(), last_used_at = now(), expires_at = excluded.expires_at
			RETURNING `+cacheCols, e.Scope, e.Key, e.Size, e.Path, e.ExpiresAt))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "cache", cacheID(out), "saved", out)
	})
	return out, err
}

func (t cache) Find(ctx context.Context, scope string, keys ...string) (store.CacheEntry, error) {
	var out store.CacheEntry
	err := t.write(ctx, func(q querier) error {
		for _, k := range keys {
			e, err := scanCache(q.QueryRow(ctx, `UPDATE cache_entries SET last_used_at = now()
				WHERE (scope, key) = (
					SELECT scope, key FROM cache_entries
					WHERE scope = $1 AND starts_with(key, $2) AND (expires_at IS NULL OR expires_at > now())
					ORDER BY key = $2 DESC, created_at DESC, key LIMIT 1)
				RETURNING `+cacheCols, scope, k))
			if errors.Is(err, pgx.ErrNoRows) {
				continue
			}
			out = e
			return err
		}
		return store.ErrNotFound
	})
	return out, err
}

func (t cache) List(ctx context.Context) (es []store.CacheEntry, err error) {
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT `+cacheCols+` FROM cache_entries ORDER BY last_used_at, scope, key`)
		es, err = all(rows, err, scanCache)
		return err
	})
	return es, err
}

func (t cache) Delete(ctx context.Context, scope, key string) error {
	return t.write(ctx, func(q querier) error {
		e, err := scanCache(q.QueryRow(ctx, `DELETE FROM cache_entries WHERE scope = $1 AND key = $2 RETURNING `+cacheCols, scope, key))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "cache", cacheID(e), "deleted", e)
	})
}

func (t cache) DeleteExpired(ctx context.Context) (es []store.CacheEntry, err error) {
	err = t.write(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `DELETE FROM cache_entries WHERE expires_at <= now() RETURNING `+cacheCols)
		if es, err = all(rows, err, scanCache); err != nil {
			return err
		}
		return emitRows(ctx, q, "cache", es, cacheID, func(store.CacheEntry) string { return "deleted" })
	})
	return es, err
}

type audit struct{ *conn }

const auditCols = `id, at, actor, action, resource_type, resource_id, details`

func scanAudit(r pgx.Row) (store.AuditEntry, error) {
	var e store.AuditEntry
	err := r.Scan(&e.ID, &e.Time, &e.Actor, &e.Action, &e.ResourceType, &e.ResourceID, &e.Details)
	return e, err
}

func (t audit) Record(ctx context.Context, e store.AuditEntry) (out store.AuditEntry, err error) {
	if e.Actor == "" || e.Action == "" {
		return e, fmt.Errorf("%w: audit entry needs an actor and an action", store.ErrInvalid)
	}
	err = t.write(ctx, func(q querier) error {
		out, err = scanAudit(q.QueryRow(ctx, `INSERT INTO audit_log (at, actor, action, resource_type, resource_id, details)
			VALUES (now(), $1, $2, $3, $4, $5) RETURNING `+auditCols, e.Actor, e.Action, e.ResourceType, e.ResourceID, jsonArg(e.Details)))
		return err
	})
	return out, err
}

func (t audit) List(ctx context.Context, f store.AuditFilter) (es []store.AuditEntry, err error) {
	var s sel
	if f.Actor != "" {
		s.cond(`actor = ?`, f.Actor)
	}
	if f.ResourceType != "" {
		s.cond(`resource_type = ?`, f.ResourceType)
	}
	if f.ResourceID != "" {
		s.cond(`resource_id = ?`, f.ResourceID)
	}
	if f.Before > 0 {
		s.cond(`id < ?`, f.Before)
	}
	sql := s.sql(`SELECT `+auditCols+` FROM audit_log`, `id DESC`, f.Limit, 0)
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, sql, s.args...)
		es, err = all(rows, err, scanAudit)
		return err
	})
	return es, err
}

type tokens struct{ *conn }

const tokenCols = `id, name, role, hash, created_at, last_used_at`

func scanToken(r pgx.Row) (store.APIToken, error) {
	var t store.APIToken
	err := r.Scan(&t.ID, &t.Name, &t.Role, &t.Hash, &t.CreatedAt, &t.LastUsedAt)
	return t, err
}

func validToken(t store.APIToken) error {
	switch t.Role {
	case "viewer", "developer", "admin":
	default:
		return fmt.Errorf("%w: token role %q", store.ErrInvalid, t.Role)
	}
	if t.Name == "" || t.Hash == "" {
		return fmt.Errorf("%w: token needs a name and a hash", store.ErrInvalid)
	}
	return nil
}

func (t tokens) Create(ctx context.Context, tok store.APIToken) (store.APIToken, error) {
	if err := validToken(tok); err != nil {
		return tok, err
	}
	if tok.ID == "" {
		tok.ID = store.NewID()
	}
	var out store.APIToken
	err := t.write(ctx, func(q querier) (err error) {
		out, err = scanToken(q.QueryRow(ctx, `INSERT INTO api_tokens (id, name, role, hash, created_at)
			VALUES ($1, $2, $3, $4, now()) RETURNING `+tokenCols, tok.ID, tok.Name, tok.Role, tok.Hash))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "token", out.ID, "created", out)
	})
	return out, err
}

func (t tokens) GetByHash(ctx context.Context, hash string) (tok store.APIToken, err error) {
	err = t.read(ctx, func(q querier) error {
		tok, err = scanToken(q.QueryRow(ctx, `SELECT `+tokenCols+` FROM api_tokens WHERE hash = $1`, hash))
		return err
	})
	return tok, err
}

func (t tokens) List(ctx context.Context) (toks []store.APIToken, err error) {
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT `+tokenCols+` FROM api_tokens ORDER BY name`)
		toks, err = all(rows, err, scanToken)
		return err
	})
	return toks, err
}

func (t tokens) Delete(ctx context.Context, id string) error {
	return t.write(ctx, func(q querier) error {
		tok, err := scanToken(q.QueryRow(ctx, `DELETE FROM api_tokens WHERE id = $1 RETURNING `+tokenCols, id))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, "token", tok.ID, "deleted", tok)
	})
}

func (t tokens) Touch(ctx context.Context, id string, at time.Time) error {
	at = at.UTC().Truncate(time.Microsecond)
	return t.write(ctx, func(q querier) error {
		tag, err := q.Exec(ctx, `UPDATE api_tokens SET last_used_at = $2 WHERE id = $1`, id, at)
		if err == nil && tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		return err
	})
}

type outbox struct{ *conn }

func (t outbox) Append(ctx context.Context, evs ...store.Event) error {
	for i := range evs {
		if evs[i].Type == "" || evs[i].Aggregate == "" {
			return fmt.Errorf("%w: event needs a type and an aggregate", store.ErrInvalid)
		}
		if evs[i].ID == "" {
			evs[i].ID = store.NewID()
		}
		if len(evs[i].Payload) == 0 {
			evs[i].Payload = json.RawMessage("null")
		}
	}
	return t.write(ctx, func(q querier) error { return emit(ctx, q, evs...) })
}

func (t outbox) Pending(ctx context.Context, limit int) (evs []store.Event, err error) {
	err = t.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT id, type, aggregate, aggregate_id, payload, created_at FROM outbox
			WHERE published_at IS NULL ORDER BY seq LIMIT $1`, limitArg(limit))
		evs, err = all(rows, err, func(r pgx.Row) (e store.Event, err error) {
			err = r.Scan(&e.ID, &e.Type, &e.Aggregate, &e.AggregateID, &e.Payload, &e.CreatedAt)
			return e, err
		})
		return err
	})
	return evs, err
}

func (t outbox) MarkPublished(ctx context.Context, ids ...string) error {
	return t.write(ctx, func(q querier) error {
		_, err := q.Exec(ctx, `UPDATE outbox SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL`, ids)
		return err
	})
}

func (t outbox) Prune(ctx context.Context, before time.Time) (n int, err error) {
	err = t.write(ctx, func(q querier) error {
		tag, err := q.Exec(ctx, `DELETE FROM outbox WHERE published_at < $1`, before)
		n = int(tag.RowsAffected())
		return err
	})
	return n, err
}
