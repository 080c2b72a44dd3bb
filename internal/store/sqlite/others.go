package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/oxide-ci/oxide/internal/store"
)

type agents struct{ *conn }

const agentCols = `id, name, labels, status, version, os, arch, capacity, cpu_millis, memory_bytes, gpus, last_heartbeat_at, registered_at`

func scanAgent(r scanner) (store.Agent, error) {
	var a store.Agent
	err := r.Scan(&a.ID, &a.Name, jsonCol{&a.Labels}, &a.Status, &a.Version, &a.OS, &a.Arch, &a.Capacity, &a.CPUMillis, &a.MemoryBytes, &a.GPUs,
		nullTimeCol{&a.LastHeartbeatAt}, timeCol{&a.RegisteredAt})
	if len(a.Labels) == 0 {
		a.Labels = nil
	}
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
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanAgent(q.QueryRowContext(ctx, `INSERT INTO agents (id, name, labels, status, version, os, arch, capacity,
				cpu_millis, memory_bytes, gpus, last_heartbeat_at, registered_at)
			VALUES (?1, ?2, ?3, 'online', ?4, ?5, ?6, ?7, ?9, ?10, ?11, ?8, ?8)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, labels = excluded.labels, status = 'online',
				version = excluded.version, os = excluded.os, arch = excluded.arch, capacity = excluded.capacity,
				cpu_millis = excluded.cpu_millis, memory_bytes = excluded.memory_bytes, gpus = excluded.gpus,
				last_heartbeat_at = ?8
			RETURNING `+agentCols, a.ID, a.Name, labelsArg(a.Labels), a.Version, a.OS, a.Arch, a.Capacity, ts(now), a.CPUMillis, a.MemoryBytes, a.GPUs))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "agent", out.ID, "registered", out)
	})
	return out, err
}

func (t agents) Get(ctx context.Context, id string) (a store.Agent, err error) {
	err = t.read(func(q querier) error {
		a, err = scanAgent(q.QueryRowContext(ctx, `SELECT `+agentCols+` FROM agents WHERE id = ?`, id))
		return err
	})
	return a, err
}

func (t agents) List(ctx context.Context) (as []store.Agent, err error) {
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT `+agentCols+` FROM agents ORDER BY name, id`)
		as, err = all(rows, err, scanAgent)
		return err
	})
	return as, err
}

func (t agents) Heartbeat(ctx context.Context, id string) error {
	return t.write(ctx, func(q querier, now time.Time) error {
		res, err := q.ExecContext(ctx, `UPDATE agents SET last_heartbeat_at = ? WHERE id = ?`, ts(now), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return cmpOr(err, store.ErrNotFound)
		}
		return nil
	})
}

// cmpOr returns err, or else alt.
func cmpOr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

func (t agents) SetStatus(ctx context.Context, id string, status store.AgentStatus) (store.Agent, error) {
	if !status.Valid() {
		return store.Agent{}, fmt.Errorf("%w: agent status %q", store.ErrInvalid, status)
	}
	var out store.Agent
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanAgent(q.QueryRowContext(ctx, `UPDATE agents SET status = ? WHERE id = ? RETURNING `+agentCols, status, id))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "agent", out.ID, string(out.Status), out)
	})
	return out, err
}

// silent is the condition of Agents.Silent, with parameter ?1 the time
// before which a heartbeat is too old.
const silent = `last_heartbeat_at < ?1 AND (status IN ('online', 'busy', 'draining') OR status = 'offline' AND EXISTS (
	SELECT 1 FROM jobs WHERE jobs.worker_id = agents.id AND jobs.state IN ('assigned', 'running')))`

func (t agents) Silent(ctx context.Context, silence time.Duration) (as []store.Agent, err error) {
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT `+agentCols+` FROM agents WHERE `+silent+` ORDER BY name, id`,
			ts(time.Now().Add(-silence)))
		as, err = all(rows, err, scanAgent)
		return err
	})
	return as, err
}

func (t agents) MarkLost(ctx context.Context, id string, silence time.Duration) (a store.Agent, err error) {
	err = t.write(ctx, func(q querier, now time.Time) error {
		a, err = scanAgent(q.QueryRowContext(ctx, `UPDATE agents SET status = 'lost' WHERE id = ?2 AND `+silent+`
			RETURNING `+agentCols, ts(now.Add(-silence)), id))
		if errors.Is(err, sql.ErrNoRows) {
			return missing(ctx, q, "agents", id)
		}
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "agent", a.ID, "lost", a)
	})
	return a, err
}

func (t agents) Delete(ctx context.Context, id string) error {
	return t.write(ctx, func(q querier, now time.Time) error {
		a, err := scanAgent(q.QueryRowContext(ctx, `DELETE FROM agents WHERE id = ? RETURNING `+agentCols, id))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "agent", a.ID, "deleted", a)
	})
}

type secrets struct{ *conn }

const secretCols = `scope, scope_id, name, ciphertext, created_at, updated_at`

func scanSecret(r scanner) (store.Secret, error) {
	var s store.Secret
	err := r.Scan(&s.Scope, &s.ScopeID, &s.Name, &s.Ciphertext, timeCol{&s.CreatedAt}, timeCol{&s.UpdatedAt})
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
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanSecret(q.QueryRowContext(ctx, `INSERT INTO secrets (scope, scope_id, name, ciphertext, created_at, updated_at)
			VALUES (?1, ?2, ?3, ?4, ?5, ?5)
			ON CONFLICT (scope, scope_id, name) DO UPDATE SET ciphertext = excluded.ciphertext, updated_at = ?5
			RETURNING `+secretCols, s.Scope, s.ScopeID, s.Name, s.Ciphertext, ts(now)))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "secret", secretID(out.SecretKey), "saved", out)
	})
	return out, err
}

func (t secrets) Get(ctx context.Context, k store.SecretKey) (s store.Secret, err error) {
	err = t.read(func(q querier) error {
		s, err = scanSecret(q.QueryRowContext(ctx, `SELECT `+secretCols+` FROM secrets WHERE scope = ? AND scope_id = ? AND name = ?`,
			k.Scope, k.ScopeID, k.Name))
		return err
	})
	return s, err
}

func (t secrets) List(ctx context.Context, scope store.SecretScope, scopeID string) (ss []store.Secret, err error) {
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT scope, scope_id, name, NULL, created_at, updated_at FROM secrets
			WHERE scope = ? AND scope_id = ? ORDER BY name`, scope, scopeID)
		ss, err = all(rows, err, scanSecret)
		return err
	})
	return ss, err
}

func (t secrets) Delete(ctx context.Context, k store.SecretKey) error {
	return t.write(ctx, func(q querier, now time.Time) error {
		s, err := scanSecret(q.QueryRowContext(ctx, `DELETE FROM secrets WHERE scope = ? AND scope_id = ? AND name = ? RETURNING `+secretCols,
			k.Scope, k.ScopeID, k.Name))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "secret", secretID(s.SecretKey), "deleted", s)
	})
}

type cache struct{ *conn }

const cacheCols = `scope, key, size_bytes, path, created_at, last_used_at, expires_at`

func scanCache(r scanner) (store.CacheEntry, error) {
	var e store.CacheEntry
	err := r.Scan(&e.Scope, &e.Key, &e.Size, &e.Path, timeCol{&e.CreatedAt}, timeCol{&e.LastUsedAt}, nullTimeCol{&e.ExpiresAt})
	return e, err
}

func cacheID(e store.CacheEntry) string { return e.Scope + "/" + e.Key }

func (t cache) Put(ctx context.Context, e store.CacheEntry) (store.CacheEntry, error) {
	if e.Key == "" || e.Path == "" {
		return e, fmt.Errorf("%w: cache entry needs a key and a path", store.ErrInvalid)
	}
	var out store.CacheEntry
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanCache(q.QueryRowContext(ctx, `INSERT INTO cache_entries (scope, key, size_bytes, path, created_at, last_used_at, expires_at)
			VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
			ON CONFLICT (scope, key) DO UPDATE SET size_bytes = excluded.size_bytes, path = excluded.path,
				created_at = ?5, last_used_at = ?5, expires_at = excluded.expires_at
			RETURNING `+cacheCols, e.Scope, e.Key, e.Size, e.Path, ts(now), tsOrNull(e.ExpiresAt)))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "cache", cacheID(out), "saved", out)
	})
	return out, err
}

func (t cache) Find(ctx context.Context, scope string, keys ...string) (store.CacheEntry, error) {
	var out store.CacheEntry
	err := t.write(ctx, func(q querier, now time.Time) error {
		for _, k := range keys {
			e, err := scanCache(q.QueryRowContext(ctx, `UPDATE cache_entries SET last_used_at = ?3
				WHERE (scope, key) = (
					SELECT scope, key FROM cache_entries
					WHERE scope = ?1 AND substr(key, 1, length(?2)) = ?2 AND (expires_at IS NULL OR expires_at > ?3)
					ORDER BY key = ?2 DESC, created_at DESC, key LIMIT 1)
				RETURNING `+cacheCols, scope, k, ts(now)))
			if errors.Is(err, sql.ErrNoRows) {
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
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT `+cacheCols+` FROM cache_entries ORDER BY last_used_at, scope, key`)
		es, err = all(rows, err, scanCache)
		return err
	})
	return es, err
}

func (t cache) Delete(ctx context.Context, scope, key string) error {
	return t.write(ctx, func(q querier, now time.Time) error {
		e, err := scanCache(q.QueryRowContext(ctx, `DELETE FROM cache_entries WHERE scope = ? AND key = ? RETURNING `+cacheCols, scope, key))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "cache", cacheID(e), "deleted", e)
	})
}

func (t cache) DeleteExpired(ctx context.Context) (es []store.CacheEntry, err error) {
	err = t.write(ctx, func(q querier, now time.Time) error {
		rows, err := q.QueryContext(ctx, `DELETE FROM cache_entries WHERE expires_at <= ? RETURNING `+cacheCols, ts(now))
		if es, err = all(rows, err, scanCache); err != nil {
			return err
		}
		return emitRows(ctx, q, now, "cache", es, cacheID, func(store.CacheEntry) string { return "deleted" })
	})
	return es, err
}

type audit struct{ *conn }

const auditCols = `id, at, actor, action, resource_type, resource_id, details`

func scanAudit(r scanner) (store.AuditEntry, error) {
	var e store.AuditEntry
	err := r.Scan(&e.ID, timeCol{&e.Time}, &e.Actor, &e.Action, &e.ResourceType, &e.ResourceID, rawCol{&e.Details})
	return e, err
}

func (t audit) Record(ctx context.Context, e store.AuditEntry) (out store.AuditEntry, err error) {
	if e.Actor == "" || e.Action == "" {
		return e, fmt.Errorf("%w: audit entry needs an actor and an action", store.ErrInvalid)
	}
	err = t.write(ctx, func(q querier, now time.Time) error {
		out, err = scanAudit(q.QueryRowContext(ctx, `INSERT INTO audit_log (at, actor, action, resource_type, resource_id, details)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING `+auditCols, ts(now), e.Actor, e.Action, e.ResourceType, e.ResourceID, jsonArg(e.Details)))
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
	query := s.sql(`SELECT `+auditCols+` FROM audit_log`, `id DESC`, f.Limit, 0)
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, query, s.args...)
		es, err = all(rows, err, scanAudit)
		return err
	})
	return es, err
}

type tokens struct{ *conn }

const tokenCols = `id, name, role, hash, created_at, last_used_at`

func scanToken(r scanner) (store.APIToken, error) {
	var t store.APIToken
	err := r.Scan(&t.ID, &t.Name, &t.Role, &t.Hash, timeCol{&t.CreatedAt}, nullTimeCol{&t.LastUsedAt})
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
	err := t.write(ctx, func(q querier, now time.Time) (err error) {
		out, err = scanToken(q.QueryRowContext(ctx, `INSERT INTO api_tokens (id, name, role, hash, created_at)
			VALUES (?, ?, ?, ?, ?) RETURNING `+tokenCols, tok.ID, tok.Name, tok.Role, tok.Hash, ts(now)))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "token", out.ID, "created", out)
	})
	return out, err
}

func (t tokens) GetByHash(ctx context.Context, hash string) (tok store.APIToken, err error) {
	err = t.read(func(q querier) error {
		tok, err = scanToken(q.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM api_tokens WHERE hash = ?`, hash))
		return err
	})
	return tok, err
}

func (t tokens) List(ctx context.Context) (toks []store.APIToken, err error) {
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT `+tokenCols+` FROM api_tokens ORDER BY name`)
		toks, err = all(rows, err, scanToken)
		return err
	})
	return toks, err
}

func (t tokens) Delete(ctx context.Context, id string) error {
	return t.write(ctx, func(q querier, now time.Time) error {
		tok, err := scanToken(q.QueryRowContext(ctx, `DELETE FROM api_tokens WHERE id = ? RETURNING `+tokenCols, id))
		if err != nil {
			return err
		}
		return emitOne(ctx, q, now, "token", tok.ID, "deleted", tok)
	})
}

func (t tokens) Touch(ctx context.Context, id string, at time.Time) error {
	return t.write(ctx, func(q querier, now time.Time) error {
		res, err := q.ExecContext(ctx, `UPDATE api_tokens SET last_used_at = ? WHERE id = ?`, ts(at), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return cmpOr(err, store.ErrNotFound)
		}
		return nil
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
	if len(evs) == 0 {
		return nil
	}
	return t.write(ctx, func(q querier, now time.Time) error { return emit(ctx, q, now, evs...) })
}

func (t outbox) Pending(ctx context.Context, limit int) (evs []store.Event, err error) {
	err = t.read(func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT id, type, aggregate, aggregate_id, payload, created_at FROM outbox
			WHERE published_at IS NULL ORDER BY seq LIMIT ?`, limitArg(limit))
		evs, err = all(rows, err, func(r scanner) (e store.Event, err error) {
			err = r.Scan(&e.ID, &e.Type, &e.Aggregate, &e.AggregateID, rawCol{&e.Payload}, timeCol{&e.CreatedAt})
			return e, err
		})
		return err
	})
	return evs, err
}

func (t outbox) MarkPublished(ctx context.Context, ids ...string) error {
	return t.write(ctx, func(q querier, now time.Time) error {
		_, err := q.ExecContext(ctx, `UPDATE outbox SET published_at = ?
			WHERE id IN (SELECT value FROM json_each(?)) AND published_at IS NULL`, ts(now), idsArg(ids))
		return err
	})
}

func (t outbox) Prune(ctx context.Context, before time.Time) (n int, err error) {
	err = t.write(ctx, func(q querier, now time.Time) error {
		res, err := q.ExecContext(ctx, `DELETE FROM outbox WHERE published_at < ?`, ts(before))
		if err != nil {
			return err
		}
		k, err := res.RowsAffected()
		n = int(k)
		return err
	})
	return n, err
}
