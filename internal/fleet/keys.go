// Package fleet owns what makes several pgfront instances one for cancel requests: the cancel
// keys an instance hands its clients (the server's process id with a secret pgfront issues,
// carrying the issuing instance's tag), the set of peer instances, and the authenticated
// channel on which an instance forwards a CancelRequest it does not own to the peer that does.
//
//	f := fleet.New(fleet.Options{Logger: log})
//	f.Configure(secret, "pgfront-a")         // from the config's fleet section
//	f.SetPeers("config", []fleet.Peer{{Addr: "10.0.0.2:9187"}})
//	f.Issue(pid, secret)                     // relay: the client's BackendKeyData
//	peer, ok := f.Forward(key, "rw")         // a CancelRequest no local session has
//	mux.Handle("POST /api/v1/peer/cancel", f.Handler(cancelLocal)) // on the admin listener
//
// A key's first four secret bytes are P(tag || 24 random bits), where P is a 32-bit block
// cipher (a Feistel network with AES as its round function) keyed by the fleet secret and
// tweaked by the process id. Any instance holding the fleet secret reads the tag back; to anyone
// else the secret is uniformly random, so a forged key is no likelier to hit a session than
// against PostgreSQL itself. Longer (protocol 3.2) secrets get the rest as random bytes.
package fleet

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"

	"github.com/pgfront/pgfront/internal/pgwire"
)

// feistelRounds is the rounds of the 32-bit permutation; 4 already make a strong
// pseudo-random permutation (Luby-Rackoff), 8 leave a margin at no noticeable cost.
const feistelRounds = 8

// Keys issues and reads cancel keys. It is immutable and safe for concurrent use.
type Keys struct {
	block cipher.Block
	tag   byte
}

// NewKeys returns the keys of an instance named name in the fleet whose shared secret is
// secret; a nil secret (no fleet) keys the permutation with random bytes: the keys are then
// this process's alone (an upgrade's successor still relays cancels to it by key).
func NewKeys(secret []byte, name string) *Keys {
	var k [16]byte
	if secret == nil {
		_, _ = rand.Read(k[:])
	} else {
		copy(k[:], derive(secret, "pgfront cancel keys"))
	}
	b, err := aes.NewCipher(k[:])
	if err != nil {
		panic(err) // a 16-byte key is always valid
	}
	return &Keys{block: b, tag: TagOf(name)}
}

// TagOf is the 8-bit tag of an instance name. Two names may share a tag: a cancel carrying it
// is asked of every peer that has it.
func TagOf(name string) byte {
	h := sha256.Sum256([]byte("pgfront fleet tag\x00" + name))
	return h[0]
}

// Tag is this instance's tag.
func (k *Keys) Tag() byte { return k.tag }

// Issue fills secret (at least 4 bytes) with a new secret for a session whose server's process
// id is pid, tagged with this instance's tag.
func (k *Keys) Issue(pid uint32, secret []byte) {
	var r [4]byte
	_, _ = rand.Read(r[1:])
	r[0] = k.tag
	binary.BigEndian.PutUint32(secret, k.permute(pid, binary.BigEndian.Uint32(r[:]), false))
	if len(secret) > 4 {
		_, _ = rand.Read(secret[4:])
	}
}

// Owner reads the tag of the instance that issued key; ok is false for a secret too short to
// carry one. A key pgfront did not issue (a passthrough session's, a forged one) yields a tag
// too, a random one: its owner is whoever has the session.
func (k *Keys) Owner(key pgwire.CancelKey) (tag byte, ok bool) {
	if len(key.Secret) < 4 {
		return 0, false
	}
	x := k.permute(key.ProcessID, binary.BigEndian.Uint32([]byte(key.Secret[:4])), true)
	return byte(x >> 24), true
}

// permute is the keyed 32-bit permutation (inverse: its inverse), tweaked by pid.
func (k *Keys) permute(pid, x uint32, inverse bool) uint32 {
	// One scratch block for every round: what goes through the cipher.Block interface
	// escapes, so it is allocated once per key, not once per round.
	buf := new([32]byte)
	l, r := uint16(x>>16), uint16(x)
	if !inverse {
		for i := range feistelRounds {
			l, r = r, l^k.round(buf, i, pid, r)
		}
	} else {
		for i := feistelRounds - 1; i >= 0; i-- {
			l, r = r^k.round(buf, i, pid, l), l
		}
	}
	return uint32(l)<<16 | uint32(r)
}

// round is the Feistel round function: 16 bits of AES over (round, pid, half).
func (k *Keys) round(buf *[32]byte, i int, pid uint32, half uint16) uint16 {
	in, out := buf[:16], buf[16:]
	clear(in)
	in[0] = byte(i)
	binary.BigEndian.PutUint32(in[1:], pid)
	binary.BigEndian.PutUint16(in[5:], half)
	k.block.Encrypt(out, in)
	return binary.BigEndian.Uint16(out)
}

// derive is a key for one purpose from the fleet secret.
func derive(secret []byte, purpose string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}
