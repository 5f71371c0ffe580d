-- fqpack store index: the SQLite database "index.sqlite" inside a store
-- directory. Version 1 (PRAGMA user_version = 1). Opened with foreign keys
-- on, WAL journaling and synchronous=FULL.
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
