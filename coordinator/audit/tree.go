package audit

import (
	"fmt"
	"slices"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// hashSize is the size of a SHA-256 hash.
const hashSize = 32

var hasher = rfc6962.DefaultHasher

// tree is an in-memory RFC 6962 Merkle tree that keeps the hash of every
// complete subtree: levels[l] holds, concatenated, the hashes of the nodes
// (l, 0), (l, 1), ... that are complete, so node (l, i) exists iff
// (i+1)<<l <= size. Roots at any size and proofs then need O(log n) hashes.
//
// Stored hashes never change, so slices returned by node stay valid after
// later appends (which may move the level's buffer); callers outside the
// package get copies.
type tree struct {
	levels [][]byte
	size   uint64
}

// appendHash adds a leaf hash and every subtree it completes.
func (t *tree) appendHash(leafHash []byte) {
	if len(t.levels) == 0 {
		t.levels = append(t.levels, nil)
	}
	t.levels[0] = append(t.levels[0], leafHash...)
	cur := leafHash
	idx := t.size
	t.size++
	for l := 0; idx&1 == 1; l++ {
		left := t.levels[l][(idx-1)*hashSize : idx*hashSize]
		cur = hasher.HashChildren(left, cur)
		if len(t.levels) == l+1 {
			t.levels = append(t.levels, nil)
		}
		t.levels[l+1] = append(t.levels[l+1], cur...)
		idx >>= 1
	}
}

// node returns the hash of a complete node, or nil if the tree has no such
// node.
func (t *tree) node(id compact.NodeID) []byte {
	if id.Level >= uint(len(t.levels)) {
		return nil
	}
	lv := t.levels[id.Level]
	if id.Index >= uint64(len(lv)/hashSize) {
		return nil
	}
	return lv[id.Index*hashSize : (id.Index+1)*hashSize : (id.Index+1)*hashSize]
}

// leaf returns the hash of leaf i (i < size).
func (t *tree) leaf(i uint64) []byte {
	return t.node(compact.NodeID{Level: 0, Index: i})
}

// rangeHashes returns the hashes of the perfect subtrees that cover leaves
// [0, size), left to right.
func (t *tree) rangeHashes(size uint64) ([][]byte, error) {
	ids := compact.RangeNodes(0, size, nil)
	hs := make([][]byte, len(ids))
	for i, id := range ids {
		if hs[i] = t.node(id); hs[i] == nil {
			return nil, fmt.Errorf("audit: tree of size %d lacks node %d/%d", t.size, id.Level, id.Index)
		}
	}
	return hs, nil
}

// rootAt returns the root of the tree of the first size leaves.
func (t *tree) rootAt(size uint64) ([]byte, error) {
	if size > t.size {
		return nil, fmt.Errorf("%w: tree size %d beyond %d", ErrOutOfRange, size, t.size)
	}
	if size == 0 {
		return hasher.EmptyRoot(), nil
	}
	hs, err := t.rangeHashes(size)
	if err != nil {
		return nil, err
	}
	return foldRoot(hs), nil
}

// foldRoot hashes the perfect subtrees of a range that starts at 0 into its
// root (a copy, never an alias of hs).
func foldRoot(hs [][]byte) []byte {
	h := hs[len(hs)-1]
	for i := len(hs) - 2; i >= 0; i-- {
		h = hasher.HashChildren(hs[i], h)
	}
	return clone(h)
}

// rootWithLeaf returns the root of a tree whose first leaves are covered by
// the perfect subtrees hs (from rangeHashes(size)), followed by one leaf with
// the given hash: it answers "would this leaf fit at index size?".
func rootWithLeaf(size uint64, hs [][]byte, leafHash []byte) ([]byte, error) {
	f := compact.RangeFactory{Hash: hasher.HashChildren}
	r, err := f.NewRange(0, size, slices.Clone(hs))
	if err != nil {
		return nil, err
	}
	if err := r.Append(leafHash, nil); err != nil {
		return nil, err
	}
	root, err := r.GetRootHash(nil)
	return clone(root), err
}

// nodes fetches the hashes for a proof and folds its ephemeral node.
func (t *tree) nodes(n proof.Nodes) ([][]byte, error) {
	hs := make([][]byte, len(n.IDs))
	for i, id := range n.IDs {
		if hs[i] = t.node(id); hs[i] == nil {
			return nil, fmt.Errorf("audit: tree of size %d lacks node %d/%d", t.size, id.Level, id.Index)
		}
	}
	hs, err := n.Rehash(hs, hasher.HashChildren)
	if err != nil {
		return nil, err
	}
	for i := range hs {
		hs[i] = clone(hs[i])
	}
	return hs, nil
}

func (t *tree) inclusion(index, size uint64) ([][]byte, error) {
	if size > t.size || index >= size {
		return nil, fmt.Errorf("%w: inclusion of leaf %d in tree size %d (log size %d)", ErrOutOfRange, index, size, t.size)
	}
	n, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	return t.nodes(n)
}

func (t *tree) consistency(size1, size2 uint64) ([][]byte, error) {
	if size1 > size2 || size2 > t.size {
		return nil, fmt.Errorf("%w: consistency from size %d to %d (log size %d)", ErrOutOfRange, size1, size2, t.size)
	}
	n, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, err
	}
	return t.nodes(n)
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}
