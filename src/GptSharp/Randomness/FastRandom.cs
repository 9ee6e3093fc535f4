using System.Buffers.Binary;

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
        uint threshold = (uint)Math.Round(p * (1 << 24));
        for (int i = 0; i < destination.Length; i++)
            destination[i] = (NextUInt64() >> 40) < threshold ? 1f : 0f;
    }

    /// <summary>
    /// <see cref="Bernoulli"/> over <paramref name="count"/> elements written as bits (bit j of word j/32 set where the
    /// float would be 1): the same draws and the same results, without the float row (dropout masks kept as bits).
    /// </summary>
    internal unsafe void BernoulliBits(uint* words, int count, double p)
    {
        uint threshold = (uint)Math.Round(p * (1 << 24));
        // NextUInt64's steps on a local copy of the state, so that it stays in registers (a few times faster than
        // through the fields: this draws seq² numbers per head and layer).
        ulong s0 = _s0, s1 = _s1, s2 = _s2, s3 = _s3;
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
        (_s0, _s1, _s2, _s3) = (s0, s1, s2, s3);
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
