"""attnlab's sampling generator in pure Python: ``seed::rng(seed, stream, index)``, a rand 0.10
``StdRng`` (ChaCha12, rand_core's PCG32 ``seed_from_u64``), and ``random::<f64>()``.

- ``derive``: FNV-1a over the stream name, mixed with the seed and index by SplitMix64's
  finaliser (crates/train/src/seed.rs);
- ``seed_from_u64``: 8 PCG32 outputs, little-endian, form the 32-byte key (rand_core 0.10);
- ChaCha12 with a 64-bit block counter (words 12-13) and a zero 64-bit stream (words 14-15),
  keystream words consumed in order, ``next_u64 = lo | hi << 32`` (chacha20 0.10's rng);
- ``random_f64 = (next_u64 >> 11) · 2⁻⁵³`` (rand 0.10's ``StandardUniform`` for f64).
"""

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1


def splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def derive(seed, stream, index):
    """crates/train/src/seed.rs ``derive``."""
    s = 0xCBF29CE484222325
    for b in stream.encode():
        s = ((s ^ b) * 0x100000001B3) & M64
    return splitmix64(splitmix64(splitmix64(seed & M64) ^ s) ^ (index & M64))


def _pcg32(state):
    state = (state * 0x5851F42D4C957F2D + 0xA17654E46FBE17F3) & M64
    xorshifted = (((state >> 18) ^ state) >> 27) & M32
    rot = state >> 59
    x = ((xorshifted >> rot) | (xorshifted << ((32 - rot) % 32))) & M32
    return state, x


def _rotl(x, n):
    return ((x << n) | (x >> (32 - n))) & M32


def _quarter(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & M32
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & M32
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & M32
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & M32
    s[b] = _rotl(s[b] ^ s[c], 7)


class StdRng:
    """rand 0.10's ``StdRng`` (ChaCha12)."""

    ROUNDS = 12

    def __init__(self, key_bytes):
        if len(key_bytes) != 32:
            raise ValueError("a ChaCha seed is 32 bytes")
        self.key = [int.from_bytes(key_bytes[4 * i:4 * i + 4], "little") for i in range(8)]
        self.counter = 0
        self.buffer = []
        self.pos = 0

    @classmethod
    def seed_from_u64(cls, state):
        state &= M64
        out = bytearray()
        for _ in range(8):
            state, x = _pcg32(state)
            out += x.to_bytes(4, "little")
        return cls(bytes(out))

    def _block(self):
        init = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574] + self.key + [
            self.counter & M32, (self.counter >> 32) & M32, 0, 0]
        s = list(init)
        for _ in range(self.ROUNDS // 2):
            _quarter(s, 0, 4, 8, 12)
            _quarter(s, 1, 5, 9, 13)
            _quarter(s, 2, 6, 10, 14)
            _quarter(s, 3, 7, 11, 15)
            _quarter(s, 0, 5, 10, 15)
            _quarter(s, 1, 6, 11, 12)
            _quarter(s, 2, 7, 8, 13)
            _quarter(s, 3, 4, 9, 14)
        self.counter = (self.counter + 1) & M64
        return [(x + y) & M32 for x, y in zip(s, init)]

    def next_u32(self):
        if self.pos >= len(self.buffer):
            self.buffer = self._block()
            self.pos = 0
        w = self.buffer[self.pos]
        self.pos += 1
        return w

    def next_u64(self):
        lo = self.next_u32()
        hi = self.next_u32()
        return (hi << 32) | lo

    def random_f64(self):
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))


def rng(seed, stream, index=0):
    """crates/train/src/seed.rs ``rng``."""
    return StdRng.seed_from_u64(derive(seed, stream, index))
