using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.Intrinsics;

namespace GptSharp.Randomness;

/// <summary>
/// Our own generator: xoshiro256** seeded through splitmix64. Faster than <c>TorchGenerator</c>
/// (no Mersenne Twister, no per-element double transforms) but a different stream, so a run with
/// <c>--rng fast</c> does not print the book's numbers.
/// </summary>
internal sealed class FastRandom : IRandomGenerator
{
    private ulong _s0, _s1, _s2, _s3;

    public FastRandom(ulong seed = 0) => ManualSeed(seed);

    public string Kind => "fast";

    public void ManualSeed(ulong seed)
    {
        ulong x = seed;
        _s0 = SplitMix(ref x); _s1 = SplitMix(ref x); _s2 = SplitMix(ref x); _s3 = SplitMix(ref x);
    }

    private static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Next 64 random bits.</summary>
    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0; _s3 ^= _s1; _s1 ^= _s2; _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 24 bits, exact in float32.</summary>
    private float NextFloat() => (NextUInt64() >> 40) * (1f / (1 << 24));

    /// <summary>Uniform in [0, 1) with 53 bits.</summary>
    private double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    public void Uniform(Span<float> destination, double from, double to)
    {
        float lo = (float)from, range = (float)(to - from);
        for (int i = 0; i < destination.Length; i++) destination[i] = lo + range * NextFloat();
    }

    public void Normal(Span<float> destination, double mean, double std)
    {
        // Box-Muller, two values per pair of uniforms.
        for (int i = 0; i < destination.Length; i += 2)
        {
            double u1 = 1.0 - NextDouble(), u2 = NextDouble();
            double r = Math.Sqrt(-2.0 * Math.Log(u1));
            destination[i] = (float)(mean + std * r * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < destination.Length) destination[i + 1] = (float)(mean + std * r * Math.Sin(2 * Math.PI * u2));
        }
    }

    public void Bernoulli(Span<float> destination, double p)
    {
        // Compare 24-bit uniforms against a threshold: one multiply-free test per element.
        uint threshold = BernoulliThreshold(p);
        for (int i = 0; i < destination.Length; i++)
            destination[i] = (NextUInt64() >> 40) < threshold ? 1f : 0f;
    }

    /// <summary>
    /// <see cref="Bernoulli"/> over <paramref name="count"/> elements written as bits (bit j of word j/32 set where the
    /// float would be 1): the same draws and the same results, without the float row (dropout masks kept as bits).
    /// </summary>
    internal unsafe void BernoulliBits(uint* words, int count, double p)
    {
        var state = new State { S0 = _s0, S1 = _s1, S2 = _s2, S3 = _s3 };
        BernoulliBits(ref state, words, count, BernoulliThreshold(p));
        (_s0, _s1, _s2, _s3) = (state.S0, state.S1, state.S2, state.S3);
    }

    /// <summary>The 24-bit threshold <see cref="Bernoulli"/> compares its draws with.</summary>
    internal static uint BernoulliThreshold(double p) => (uint)Math.Round(p * (1 << 24));

    /// <summary><see cref="BernoulliBits(uint*,int,double)"/> from a given state, which it moves on.</summary>
    internal static unsafe void BernoulliBits(ref State state, uint* words, int count, uint threshold)
    {
        // NextUInt64's steps on a local copy of the state, so that it stays in registers (a few times faster than
        // through the fields: this draws seq² numbers per head and layer).
        ulong s0 = state.S0, s1 = state.S1, s2 = state.S2, s3 = state.S3;
        for (int first = 0; first < count; first += 32)
        {
            uint word = 0;
            int n = Math.Min(32, count - first);
            for (int j = 0; j < n; j++)
            {
                ulong result = ulong.RotateLeft(s1 * 5, 7) * 9;
                ulong t = s1 << 17;
                s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3;
                s2 ^= t;
                s3 = ulong.RotateLeft(s3, 45);
                word |= ((result >> 40) < threshold ? 1u : 0u) << j;
            }
            words[first >> 5] = word;
        }
        (state.S0, state.S1, state.S2, state.S3) = (s0, s1, s2, s3);
    }

    /// <summary>
    /// <see cref="BernoulliBits(ref State, uint*, int, uint)"/> for four streams at once, one per 64-bit lane of a
    /// Vector256 (xoshiro's steps are shifts, rotations and XORs, and its scrambler's ×5 and ×9 are shifts and adds, so
    /// AVX2 runs four streams in the instructions of about one): stream L fills <paramref name="rows"/> rows of
    /// <paramref name="columns"/> bits, <paramref name="words"/> words apart, from <c>bits + L·laneWords</c>, starting
    /// from <c>states[L]</c>, which it moves on. Each lane draws exactly what the scalar loop would.
    /// </summary>
    internal static unsafe void BernoulliBits4(Span<State> states, uint* bits, long laneWords, int rows, int words, int columns, uint threshold)
    {
        var s0 = Vector256.Create(states[0].S0, states[1].S0, states[2].S0, states[3].S0);
        var s1 = Vector256.Create(states[0].S1, states[1].S1, states[2].S1, states[3].S1);
        var s2 = Vector256.Create(states[0].S2, states[1].S2, states[2].S2, states[3].S2);
        var s3 = Vector256.Create(states[0].S3, states[1].S3, states[2].S3, states[3].S3);
        var limit = Vector256.Create((long)threshold);
        for (int r = 0; r < rows; r++)
        {
            uint* row = bits + (long)r * words;
            for (int first = 0; first < columns; first += 32)
            {
                var word = Vector256<long>.Zero;
                var bit = Vector256<long>.One;
                int n = Math.Min(32, columns - first);
                for (int j = 0; j < n; j++)
                {
                    var x = (s1 << 2) + s1;
                    x = (x << 7) | (x >> 57);
                    var result = (x << 3) + x;
                    var t = s1 << 17;
                    s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3;
                    s2 ^= t;
                    s3 = (s3 << 45) | (s3 >> 19);
                    // (result >> 40) < 2^24 fits a signed compare (AVX2 has no unsigned one).
                    word |= Vector256.LessThan((result >> 40).AsInt64(), limit) & bit;
                    bit += bit;
                }
                long w = first >> 5;
                row[w] = (uint)word.GetElement(0);
                row[laneWords + w] = (uint)word.GetElement(1);
                row[2 * laneWords + w] = (uint)word.GetElement(2);
                row[3 * laneWords + w] = (uint)word.GetElement(3);
            }
        }
        for (int l = 0; l < 4; l++)
            states[l] = new State { S0 = s0.GetElement(l), S1 = s1.GetElement(l), S2 = s2.GetElement(l), S3 = s3.GetElement(l) };
    }

    /// <summary>states[L] ← states[L − 1] moved <paramref name="draws"/> draws on, for L ≥ 1 (one jump polynomial for all).</summary>
    internal static void Spread(Span<State> states, long draws)
    {
        var jump = JumpPolynomial.Power(draws);
        for (int l = 1; l < states.Length; l++) states[l] = Jump(states[l - 1], jump);
    }

    /// <summary>xoshiro256's four state words.</summary>
    internal struct State
    {
        public ulong S0, S1, S2, S3;
    }

    /// <summary>
    /// This generator's state after <paramref name="draws"/> more <see cref="NextUInt64"/> calls, without making them
    /// (the generator is unchanged): xoshiro256's state transition T is linear over GF(2), so Tᴺ = (xᴺ mod P)(T) for
    /// its characteristic polynomial P, which costs 256 steps whatever N. Lets a long stream (a dropout mask of seq²
    /// draws per head) be drawn in parallel pieces that hold the serial draws bit for bit.
    /// </summary>
    internal State StateAhead(long draws)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(draws);
        return Jump(new State { S0 = _s0, S1 = _s1, S2 = _s2, S3 = _s3 }, JumpPolynomial.Power(draws));
    }

    /// <summary>The state <paramref name="jump"/> (xᴺ mod P) moves <paramref name="s"/> to: N draws on.</summary>
    private static State Jump(State s, JumpPolynomial jump)
    {
        var ahead = new State();
        for (int k = 0; k < 256; k++)
        {
            if (jump.Bit(k)) { ahead.S0 ^= s.S0; ahead.S1 ^= s.S1; ahead.S2 ^= s.S2; ahead.S3 ^= s.S3; }
            Step(ref s.S0, ref s.S1, ref s.S2, ref s.S3);
        }
        return ahead;
    }

    /// <summary>Moves this generator <paramref name="draws"/> draws on (see <see cref="StateAhead"/>).</summary>
    internal void Skip(long draws)
    {
        var ahead = StateAhead(draws);
        (_s0, _s1, _s2, _s3) = (ahead.S0, ahead.S1, ahead.S2, ahead.S3);
    }

    /// <summary>xoshiro256's linear state step (<see cref="NextUInt64"/> without the output scrambler).</summary>
    private static void Step(ref ulong s0, ref ulong s1, ref ulong s2, ref ulong s3)
    {
        ulong t = s1 << 17;
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3;
        s2 ^= t;
        s3 = ulong.RotateLeft(s3, 45);
    }

    /// <summary>
    /// Polynomials over GF(2) modulo the characteristic polynomial P of xoshiro256's transition (degree 256), found
    /// once by Berlekamp–Massey from 512 steps of one state bit (xoshiro256 has full period, so that bit's minimal
    /// polynomial is P itself: checked, degree 256). An element's coefficient k is bit k % 64 of word k / 64.
    /// </summary>
    private struct JumpPolynomial
    {
        private ulong _w0, _w1, _w2, _w3;

        /// <summary>P's coefficients below x²⁵⁶ (x²⁵⁶ itself is implied).</summary>
        private static readonly JumpPolynomial s_modulus = Characteristic();

        public readonly bool Bit(int k) => ((k switch { < 64 => _w0, < 128 => _w1, < 192 => _w2, _ => _w3 } >> (k & 63)) & 1) != 0;

        /// <summary>xᴺ mod P, by squaring and multiplying.</summary>
        public static JumpPolynomial Power(long n)
        {
            var result = new JumpPolynomial { _w0 = 1 };
            for (int bit = 63 - BitOperations.LeadingZeroCount((ulong)n); bit >= 0; bit--)
            {
                result = Multiply(result, result);
                if (((n >> bit) & 1) != 0) result.TimesX();
            }
            return result;
        }

        private static JumpPolynomial Multiply(JumpPolynomial a, JumpPolynomial b)
        {
            var product = new JumpPolynomial();
            for (int k = 255; k >= 0; k--)
            {
                product.TimesX();
                if (b.Bit(k)) { product._w0 ^= a._w0; product._w1 ^= a._w1; product._w2 ^= a._w2; product._w3 ^= a._w3; }
            }
            return product;
        }

        /// <summary>this ← this·x mod P.</summary>
        private void TimesX()
        {
            bool carry = (_w3 >> 63) != 0;
            _w3 = (_w3 << 1) | (_w2 >> 63);
            _w2 = (_w2 << 1) | (_w1 >> 63);
            _w1 = (_w1 << 1) | (_w0 >> 63);
            _w0 <<= 1;
            if (carry) { _w0 ^= s_modulus._w0; _w1 ^= s_modulus._w1; _w2 ^= s_modulus._w2; _w3 ^= s_modulus._w3; }
        }

        private static JumpPolynomial Characteristic()
        {
            const int n = 512;
            var sequence = new bool[n];
            ulong s0 = 0x9E3779B97F4A7C15UL, s1 = 0xBF58476D1CE4E5B9UL, s2 = 0x94D049BB133111EBUL, s3 = 1;
            for (int i = 0; i < n; i++)
            {
                sequence[i] = (s0 & 1) != 0;
                Step(ref s0, ref s1, ref s2, ref s3);
            }
            // Berlekamp–Massey over GF(2): the shortest recurrence s_i = Σ_{j=1..L} c_j s_{i−j}.
            var c = new bool[n + 1];
            var b = new bool[n + 1];
            c[0] = b[0] = true;
            int length = 0, shift = 1;
            for (int i = 0; i < n; i++)
            {
                bool discrepancy = sequence[i];
                for (int j = 1; j <= length; j++) discrepancy ^= c[j] & sequence[i - j];
                if (!discrepancy) { shift++; continue; }
                var previous = (bool[])c.Clone();
                for (int j = 0; j + shift <= n; j++) c[j + shift] ^= b[j];
                if (2 * length <= i)
                {
                    length = i + 1 - length;
                    b = previous;
                    shift = 1;
                }
                else shift++;
            }
            if (length != 256) throw new InvalidOperationException($"xoshiro256's characteristic polynomial came out of degree {length}, not 256.");
            // P(x) = x²⁵⁶ + Σ c_j x^(256−j): the coefficient of x^k (k < 256) is c_(256−k).
            var modulus = new JumpPolynomial();
            for (int k = 0; k < 256; k++)
                if (c[256 - k])
                {
                    ulong bit = 1UL << (k & 63);
                    switch (k >> 6) { case 0: modulus._w0 |= bit; break; case 1: modulus._w1 |= bit; break; case 2: modulus._w2 |= bit; break; default: modulus._w3 |= bit; break; }
                }
            return modulus;
        }
    }

    public long RandomInt64() => (long)(NextUInt64() >> 1);

    public void RandPerm(Span<int> destination)
    {
        for (int i = 0; i < destination.Length; i++) destination[i] = i;
        for (int i = destination.Length - 1; i > 0; i--)
        {
            int j = (int)(NextUInt64() % (ulong)(i + 1));
            (destination[i], destination[j]) = (destination[j], destination[i]);
        }
    }

    public int Multinomial(ReadOnlySpan<float> weights)
    {
        double total = 0;
        foreach (float w in weights) total += w;
        if (!(total > 0)) throw new ArgumentException("multinomial needs at least one positive weight.");
        double target = NextDouble() * total, running = 0;
        int last = -1;
        for (int i = 0; i < weights.Length; i++)
        {
            if (weights[i] <= 0) continue;
            running += weights[i];
            last = i;
            if (target < running) return i;
        }
        return last;
    }

    public IRandomGenerator NewGenerator(ulong seed) => new FastRandom(seed);

    public byte[] GetState()
    {
        var state = new byte[32];
        BinaryPrimitives.WriteUInt64LittleEndian(state.AsSpan(0), _s0);
        BinaryPrimitives.WriteUInt64LittleEndian(state.AsSpan(8), _s1);
        BinaryPrimitives.WriteUInt64LittleEndian(state.AsSpan(16), _s2);
        BinaryPrimitives.WriteUInt64LittleEndian(state.AsSpan(24), _s3);
        return state;
    }

    public void SetState(ReadOnlySpan<byte> state)
    {
        if (state.Length != 32) throw new ArgumentException($"A FastRandom state is 32 bytes, got {state.Length}.");
        _s0 = BinaryPrimitives.ReadUInt64LittleEndian(state);
        _s1 = BinaryPrimitives.ReadUInt64LittleEndian(state[8..]);
        _s2 = BinaryPrimitives.ReadUInt64LittleEndian(state[16..]);
        _s3 = BinaryPrimitives.ReadUInt64LittleEndian(state[24..]);
    }
}
