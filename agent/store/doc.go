// Package store is the site agent's encrypted local store, on buntdb.
//
// # Encryption
//
// Envelope encryption: a random 256-bit data key, generated when a store is
// first created, is kept in the file wrapped (AES-256-GCM) under the
// operator's master key (see LoadMasterKey: a key file, or an environment
// variable). Every value is sealed with AES-256-GCM under the data key, with
// a random nonce and the record's buntdb key as associated data, so a value
// copied to another key does not open.
//
// Keys carry no PHI: a patient appears only as a pseudonym, the first 32 hex
// digits of HMAC-SHA256(site secret, "patient:"+id), and a resource only as an
// HMAC of its id. Values hold only what the feature builder needs (birth
// date, gender, codes, numbers, times, the resource's meta version), never
// raw ids. Records read back carry the pseudonyms in place of the ids.
//
// # Versions
//
// Writes are upserts by resource id that keep the newest version: a record
// whose id is already stored replaces it only when its fhir.Version is Newer
// than the stored one, so an older version arriving late (a re-sent export,
// an out-of-order feed) changes nothing. The version is kept inside the
// sealed value. Stats counts the writes ignored as stale or duplicate.
//
// # Key rotation
//
// RotateMasterKey rewraps the data key under a new master key. The wrapped
// data key is one record, so the change is one command in the file and is
// atomic even across a crash: afterwards the store opens only with the new
// key.
//
// RotateDataKey re-seals every value under a fresh data key, in batches of
// about a thousand records per transaction, resumably. It first records the
// new key next to the old one (both wrapped under the master key, in the
// same single record); from then on reads try the new key then the old one,
// and every write uses the new key. Each batch transaction re-seals the next
// records in key order and records, sealed under the new key, a cursor
// naming the last key of the previous batch, which is already on disk (a
// batch is written only after the previous one was fsynced). The old key is
// dropped, again in one command, only after the last batch is on disk. A
// rotation interrupted at any point (a crash, a power loss, an error) leaves
// a store that opens and reads normally; calling RotateDataKey again resumes
// from the cursor (re-sealing a record twice is harmless) and finishes.
// Verify reports a rotation left unfinished, and Open logs it.
//
// After either rotation the file is compacted (see Durability), so the live
// file no longer holds the old wrapped key or the values sealed under the
// old data key. Disk blocks freed by the rewrite, and earlier backups, still
// hold them: a backup opens with the master key it was made under.
//
// # Retention
//
// DeleteOlderThan removes observations, conditions and encounters dated
// before a cutoff, and the patients left without any record, in batches of
// whole patients, then compacts the file so the deleted values leave it.
//
// # Backup, restore, verify
//
// Backup writes a consistent snapshot of the store: a buntdb file holding
// the same sealed values and the same wrapped data key, as encrypted as the
// store itself. A backup is useless without the master key it was made
// under (and the pseudonym key, to find a patient's records): keep the
// keys, and their backups, apart from the store's backups. Restore puts a
// backup in place as a new store, after opening it with the keys and
// verifying every record; it never overwrites an existing store. Verify
// decrypts and decodes every record and reports counts by kind and the
// (pseudonymous) keys of the records that are corrupt.
//
// # Durability
//
// The store runs buntdb (v1.3.0) with SyncPolicy Always. What that gives,
// from buntdb's source:
//
//   - A transaction's commands are appended to the file in one write(2),
//     then fsync(2) is called before the transaction returns. A write that
//     returned nil is on disk: a crash or a power loss loses nothing
//     committed, provided the disk honours fsync (no volatile write cache
//     without power-loss protection).
//   - buntdb ignores fsync's error. A disk that fails to flush (EIO) is not
//     reported by the write it hit; later writes to a failing disk usually
//     fail in write(2) and are reported.
//   - A transaction is not atomic across a crash: buntdb writes its commands
//     in no set order, with no commit marker. If the machine stops during
//     that write (before the write returned), the next Open replays every
//     complete command and truncates the file after the last one, so an
//     unacknowledged multi-record write (Batch.Flush) may be partly applied:
//     ingest it again (upserts are idempotent). Load skips NUL bytes (a file
//     system may zero-fill a tail that was allocated but not written); other
//     damage to the file's framing makes Open fail with buntdb's "invalid
//     database": restore a backup. Damage inside a value is not buntdb's to
//     see: reading that record fails with ErrCorrupt, and Verify lists it.
//     The store's own multi-step operations (rotation, retention) are safe
//     against a partly applied last transaction.
//   - buntdb's file is append-only and grows with every update and delete.
//     The store rewrites it (buntdb's Shrink: the live records are copied to
//     path+".tmp", which is renamed over the file) when it has passed 32 MiB
//     and doubled since the last rewrite, checked after each write, and
//     after every rotation and retention run (Compact). Writers are not
//     blocked meanwhile; the write that triggered it waits for it. buntdb
//     neither syncs the new file before the rename nor the directory after
//     it; the store syncs both as soon as the rewrite returns. A power loss
//     in that short window can, on a file system that does not flush a file
//     replacing another by rename (ext4 does, by default: auto_da_alloc),
//     leave a truncated or empty file: keep backups. If the rename fails,
//     buntdb panics; the store recovers and returns ErrCompaction, and the
//     store must then be reopened.
//   - buntdb holds every record in memory and reads the whole file at Open:
//     size the gateway's RAM by BenchmarkStoreMemory.
//
// # Locking
//
// buntdb does not lock its file. Open takes an exclusive lock on a file next
// to the store (store.db gets store.lock): flock(2) where available, so
// the lock dies with its process and a crash leaves no stale lock; on other
// systems the lock file is created with O_EXCL, and one left by a crash
// must be removed by hand once no agent runs. A second Open of a locked
// store, in this process or another, fails with ErrLocked. Close removes
// the lock file.
//
// # Layout
//
//	meta:datakey                 data key(s), wrapped under the master key
//	meta:pseudocheck             proof of the pseudonym key, sealed
//	meta:rotation                data-key rotation cursor, sealed
//	pt:<pseudo>                  Patient
//	obs:<pseudo>:<hmac of id>    Observation
//	cond:<pseudo>:<hmac of id>   Condition
//	enc:<pseudo>:<hmac of id>    Encounter
package store
