-- fqpack store index: the SQLite database "index.sqlite" inside a store
-- directory. Version 2 (PRAGMA user_version = 2). Opened with foreign keys
-- on, WAL journaling and synchronous=FULL.
--
-- Versions: 1 is everything above the line "-- @version 2"; 2 adds the
-- tables below it. Opening a version 1 store runs that part and sets
-- user_version = 2 in one transaction (store/store.cc), so a new table is
-- written once, here, for new and upgraded stores alike.
--
-- Invariants the code keeps:
--  * A blob row is inserted only after its file was published (temp file,
--    fsync, rename, fsync of the directory), in the same transaction as the
--    rows that reference it.
--  * Every reference to a module (qm_module, eqm_module) names a blob row;
--    the foreign keys make SQLite refuse to delete a referenced blob.
--  * Only gc deletes blob rows and files: rows first (one transaction), files
--    after. A file without a row is an orphan that the next gc removes.
--
-- Sizes are bytes; shapes are GGUF's ne0..ne3 (ne0 = row length, unused
-- dimensions are 1).

CREATE TABLE blob (
  hash          TEXT PRIMARY KEY CHECK (length(hash) = 32),  -- XXH3-128 of (qtype, shape, bytes), hex
  qtype         INTEGER NOT NULL,   -- ggml type id, or fqpack group-int id (schema/quant_types.md)
  n_dims        INTEGER NOT NULL CHECK (n_dims BETWEEN 1 AND 4),
  ne0           INTEGER NOT NULL,
  ne1           INTEGER NOT NULL,
  ne2           INTEGER NOT NULL,
  ne3           INTEGER NOT NULL,
  raw_bytes     INTEGER NOT NULL,   -- the module's bytes
  stored_bytes  INTEGER NOT NULL,   -- the blob file's size (in a .fqpack: the payload's size)
  codec         TEXT NOT NULL DEFAULT 'zstd' CHECK (codec IN ('zstd', 'raw')),  -- a store uses zstd
  pack_offset   INTEGER             -- in a .fqpack: the payload's offset in the file; NULL in a store
) WITHOUT ROWID;

CREATE TABLE model (
  id            INTEGER PRIMARY KEY,
  name          TEXT NOT NULL UNIQUE,
  arch          TEXT NOT NULL,      -- general.architecture
  hparams       TEXT NOT NULL,      -- JSON object of the scalar "<arch>.*" metadata
  gguf_version  INTEGER NOT NULL,
  n_kv          INTEGER NOT NULL,
  metadata      BLOB NOT NULL,      -- GGUF key/value section of the first checkpoint, tokenizer included
  created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

-- One row per tensor position of a model, in the order of the first checkpoint.
CREATE TABLE slot (
  model_id      INTEGER NOT NULL REFERENCES model(id),
  idx           INTEGER NOT NULL,
  name          TEXT NOT NULL,      -- "blk.3.ffn_down.weight"
  kind          TEXT NOT NULL,      -- embed, output, attn_q, attn_k, attn_v, attn_output,
                                    -- ffn_gate, ffn_up, ffn_down, norm, other
  layer         INTEGER,            -- block index; NULL outside the blocks
  n_dims        INTEGER NOT NULL,
  ne0           INTEGER NOT NULL,
  ne1           INTEGER NOT NULL,
  ne2           INTEGER NOT NULL,
  ne3           INTEGER NOT NULL,
  PRIMARY KEY (model_id, idx),
  UNIQUE (model_id, name)
) WITHOUT ROWID;

-- A quantized model: one module per slot.
CREATE TABLE qm (
  id              INTEGER PRIMARY KEY,
  model_id        INTEGER NOT NULL REFERENCES model(id),
  label           TEXT NOT NULL,    -- "Q4_K_M", "int3-g64"
  origin          TEXT NOT NULL CHECK (origin IN ('import', 'quantize')),
  bits_per_weight REAL NOT NULL,    -- 8 * weight_bytes / elements, over all slots
  weight_bytes    INTEGER NOT NULL, -- sum of the raw bytes of its modules
  partial         INTEGER NOT NULL DEFAULT 0,  -- 1 once gc --prune took some of its modules
  params          TEXT,             -- JSON: how it was made (quantize method, group, ...)
  -- What `export` needs to write the source checkpoint back byte for byte:
  source_name     TEXT,
  source_sha256   TEXT,
  source_bytes    INTEGER,
  gguf_version    INTEGER,
  alignment       INTEGER,
  n_kv            INTEGER,
  metadata        BLOB,             -- the checkpoint's own key/value section
  created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
  UNIQUE (model_id, label)
);

CREATE TABLE qm_module (
  qm_id         INTEGER NOT NULL REFERENCES qm(id),
  slot_idx      INTEGER NOT NULL,
  hash          TEXT NOT NULL REFERENCES blob(hash),
  file_pos      INTEGER,            -- position in the source file's tensor table
  file_offset   INTEGER,            -- offset in the source file's data section
  PRIMARY KEY (qm_id, slot_idx)
) WITHOUT ROWID;
CREATE INDEX qm_module_by_hash ON qm_module(hash);

-- A FlexQuant ensemble: EQMs from QM(n_up) down to QM(n_low).
CREATE TABLE ensemble (
  id            INTEGER PRIMARY KEY,
  model_id      INTEGER NOT NULL REFERENCES model(id),
  name          TEXT NOT NULL,
  up_qm_id      INTEGER NOT NULL REFERENCES qm(id),
  low_qm_id     INTEGER NOT NULL REFERENCES qm(id),
  library       TEXT NOT NULL,      -- JSON array of the QM labels, highest precision first
  params        TEXT NOT NULL,      -- JSON: stem, branch, metric, tokens, slots taking part
  calib_sha256  TEXT,               -- of the calibration text
  calib_text    BLOB,               -- the calibration text itself, so a repair can re-run the search
  created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
  UNIQUE (model_id, name)
);

CREATE TABLE eqm (
  id            INTEGER PRIMARY KEY,
  ensemble_id   INTEGER NOT NULL REFERENCES ensemble(id),
  step          INTEGER NOT NULL,   -- 0 is QM(n_up); the last is QM(n_low)
  footprint     INTEGER NOT NULL,   -- bytes of weights resident when it runs
  calib_metric  REAL,               -- the search metric on the calibration tokens
  calib_ppl     REAL,
  calib_kl      REAL,
  UNIQUE (ensemble_id, step)
);

CREATE TABLE eqm_module (
  eqm_id        INTEGER NOT NULL REFERENCES eqm(id),
  slot_idx      INTEGER NOT NULL,
  hash          TEXT NOT NULL REFERENCES blob(hash),
  qm_id         INTEGER REFERENCES qm(id),  -- the library QM the module came from
  PRIMARY KEY (eqm_id, slot_idx)
) WITHOUT ROWID;
CREATE INDEX eqm_module_by_hash ON eqm_module(hash);

-- @version 2
-- Dynamic precision (arXiv 2506.12024; runtime/dynamic.h): a precision
-- requirement model for one pair of QMs of a model. Both QMs stay resident
-- for the units (blocks, or the output and embedding matrices) that switch;
-- per token the runtime runs the k most sensitive units at hi precision, k
-- chosen from the entropy of the previous token's output distribution. One
-- model per (hi, lo) pair: calibrating again replaces it. Removing either
-- QM removes the model (nothing else references it).
CREATE TABLE dynamic_model (
  id              INTEGER PRIMARY KEY,
  model_id        INTEGER NOT NULL REFERENCES model(id) ON DELETE CASCADE,
  hi_qm_id        INTEGER NOT NULL REFERENCES qm(id) ON DELETE CASCADE,
  lo_qm_id        INTEGER NOT NULL REFERENCES qm(id) ON DELETE CASCADE,
  n_weights       INTEGER NOT NULL,  -- elements of all slots: the denominator of every bits/weight
  hi_bytes        INTEGER NOT NULL,  -- weight bytes of the hi QM
  lo_bytes        INTEGER NOT NULL,  -- weight bytes of the lo QM
  target_bits     REAL NOT NULL,     -- the target the stored thresholds meet
  calib_bits      REAL NOT NULL,     -- bits/weight those thresholds give on the calibration text
  calib_tokens    INTEGER NOT NULL,  -- positions evaluated (= calib_starts + entropies)
  calib_starts    INTEGER NOT NULL,  -- positions with no previous distribution (chunk starts)
  -- The entropy (nats) of the hi QM's output distribution at every other
  -- calibration position, ascending, as little-endian float64s: enough to
  -- place the thresholds for any other target at run time.
  entropies       BLOB NOT NULL,
  calib_sha256    TEXT,              -- of the calibration text
  params          TEXT NOT NULL,     -- JSON: n_ctx, tokens, metric
  created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
  UNIQUE (hi_qm_id, lo_qm_id),
  CHECK (hi_qm_id <> lo_qm_id)
);

-- The units of a dynamic model, most sensitive first. A unit is every slot
-- of one block (name "blk.<layer>"), or one slot outside the blocks (its
-- tensor name), whose hi and lo modules differ. Unit `rank` runs hi for a
-- token when the previous distribution's entropy H >= threshold; thresholds
-- do not decrease with rank, so the hi units are always the `k` most
-- sensitive, k(H) = #{units: threshold <= H}, non-decreasing in H.
CREATE TABLE dynamic_unit (
  dynamic_id      INTEGER NOT NULL REFERENCES dynamic_model(id) ON DELETE CASCADE,
  rank            INTEGER NOT NULL,  -- 0 = most sensitive
  name            TEXT NOT NULL,     -- "blk.3", "output.weight"
  layer           INTEGER,           -- block index; NULL outside the blocks
  sensitivity     REAL NOT NULL,     -- mean KL(P_hi || P) in nats when only this unit runs lo
  extra_bytes     INTEGER NOT NULL,  -- bytes of its hi modules minus its lo modules
  threshold       REAL,              -- entropy in nats; NULL: never hi at target_bits
  PRIMARY KEY (dynamic_id, rank),
  UNIQUE (dynamic_id, name)
) WITHOUT ROWID;
