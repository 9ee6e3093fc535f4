using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace GptSharp.Randomness;

/// <summary>
/// PyTorch's CPU default generator, bit for bit: <c>torch.manual_seed</c> (a Mersenne Twister
/// mt19937 plus a cached second Box-Muller value) and the exact transforms PyTorch 1.13's CPU
/// kernels apply to it, so a run seeded like the book's script draws the very same weights,
/// shuffles and dropout masks and prints the book's numbers.
/// </summary>
/// <remarks>
/// Matched against Debian's PyTorch 1.13.1 (no MKL, AVX2 kernels built by GCC 12 with
/// <c>-mavx2 -mfma</c>, which fuses multiply-adds: see <see cref="NormalFill16"/>):
/// <list type="bullet">
/// <item><c>uniform_</c> float32: 24 random bits from one 32-bit draw, <c>x·(to−from)+from</c> in float with a fused multiply-add.</item>
/// <item><c>normal_</c> float32: ≥ 16 elements → <c>normal_fill_AVX2</c> (uniforms first, then 16-element Box-Muller
/// blocks with avx_mathfun's log/sincos; a ragged tail recomputes the last 16 from fresh uniforms);
/// &lt; 16 elements → <c>normal_distribution&lt;double&gt;</c> with 53-bit uniforms and the cached sine value.</item>
/// <item><c>bernoulli_(p)</c>, <c>exponential_</c> (multinomial): 53-bit double uniforms; <c>random_()</c> int64: 64 bits mod 2⁶³;
/// <c>randperm</c>: Fisher-Yates with <c>random() % (n − i)</c>.</item>
/// </list>
/// </remarks>
public sealed class TorchGenerator : IRandomGenerator
{
    private const int StateSize = 624; // MERSENNE_STATE_N
    private const int ShiftSize = 397; // MERSENNE_STATE_M

    /// <summary>Size of <see cref="GetState"/>'s bytes: <c>torch.get_rng_state().numel()</c>.</summary>
    public const int StateByteCount = 5056;

    private readonly uint[] _state = new uint[StateSize];
    // The outputs of the current state block, tempered all at once after each twist (and after SetState):
    // _tempered[i] = temper(_state[i]), so a draw is one load.
    private readonly uint[] _tempered = new uint[StateSize];
    private ulong _seed;
    private int _left;
    private uint _next;
    private double? _nextDoubleNormal;
    private float? _nextFloatNormal;

    /// <summary>A generator seeded like <c>torch.manual_seed(seed)</c>.</summary>
    public TorchGenerator(ulong seed = 67280421310721UL) => ManualSeed(seed);

    public string Kind => "torch";

    /// <summary>The seed last given to <see cref="ManualSeed"/> (<c>torch.initial_seed()</c>).</summary>
    public ulong InitialSeed => _seed;

    /// <summary>
    /// <c>CPUGeneratorImpl::set_current_seed</c>: mt19937 from the low 32 bits of the seed, and
    /// the cached normal samples forgotten.
    /// </summary>
    public void ManualSeed(ulong seed)
    {
        _seed = seed;
        _state[0] = (uint)seed;
        for (uint j = 1; j < StateSize; j++)
            _state[j] = 1812433253u * (_state[j - 1] ^ (_state[j - 1] >> 30)) + j;
        _left = 1;
        _next = 0;
        _nextDoubleNormal = null;
        _nextFloatNormal = null;
    }

    /// <summary>The next 32 bits (<c>CPUGeneratorImpl::random()</c>).</summary>
    public uint NextUInt32()
    {
        if (--_left == 0) Twist();
        return _tempered[_next++];
    }

    /// <summary>mt19937's output tempering of every state word (8 at a time).</summary>
    private void TemperAll()
    {
        var state = _state.AsSpan();
        var output = _tempered.AsSpan();
        int i = 0;
        for (; i + 8 <= StateSize; i += 8)
        {
            var y = Vector256.Create<uint>(state.Slice(i, 8));
            y ^= Vector256.ShiftRightLogical(y, 11);
            y ^= Vector256.ShiftLeft(y, 7) & Vector256.Create(0x9d2c5680u);
            y ^= Vector256.ShiftLeft(y, 15) & Vector256.Create(0xefc60000u);
            y ^= Vector256.ShiftRightLogical(y, 18);
            y.CopyTo(output.Slice(i, 8));
        }
        for (; i < StateSize; i++) output[i] = Temper(state[i]);
    }

    private static uint Temper(uint y)
    {
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        return y ^ (y >> 18);
    }

    /// <summary>The next 64 bits: two 32-bit draws, the first one high (<c>random64()</c>).</summary>
    public ulong NextUInt64()
    {
        ulong hi = NextUInt32();
        ulong lo = NextUInt32();
        return (hi << 32) | lo;
    }

    private void Twist()
    {
        var s = _state.AsSpan();
        int k = 0;
        // 8 words at a time: word k reads old words k + 1 (not yet rewritten) and k + 397 (below 624: old), or, from
        // k = 227 on, the new word k − 227, rewritten at least 8 words earlier; so each vector sees what the scalar
        // recurrence sees. A scalar tail finishes each part.
        for (; k + 8 <= StateSize - ShiftSize; k += 8) MixVector(s, k, k + ShiftSize);
        for (; k < StateSize - ShiftSize; k++) s[k] = s[k + ShiftSize] ^ Mix(s[k], s[k + 1]);
        for (; k + 8 <= StateSize - 1; k += 8) MixVector(s, k, k + ShiftSize - StateSize);
        for (; k < StateSize - 1; k++) s[k] = s[k + ShiftSize - StateSize] ^ Mix(s[k], s[k + 1]);
        s[k] = s[k + ShiftSize - StateSize] ^ Mix(s[k], s[0]);
        _left = StateSize;
        _next = 0;
        TemperAll();
    }

    /// <summary>s[k..k+8) = s[source..source+8) ^ Mix(s[k..k+8), s[k+1..k+9)), without a branch per word.</summary>
    private static void MixVector(Span<uint> s, int k, int source)
    {
        var u = Vector256.Create<uint>(s.Slice(k, 8));
        var v = Vector256.Create<uint>(s.Slice(k + 1, 8));
        var y = (u & Vector256.Create(0x80000000u)) | (v & Vector256.Create(0x7fffffffu));
        var odd = Vector256<uint>.Zero - (v & Vector256<uint>.One);
        var mixed = Vector256.ShiftRightLogical(y, 1) ^ (odd & Vector256.Create(0x9908b0dfu));
        (Vector256.Create<uint>(s.Slice(source, 8)) ^ mixed).CopyTo(s.Slice(k, 8));
    }

    private static uint Mix(uint u, uint v)
    {
        uint y = (u & 0x80000000u) | (v & 0x7fffffffu);
        return (y >> 1) ^ ((0u - (v & 1u)) & 0x9908b0dfu);
    }

    /// <summary><c>uniform_real_distribution&lt;double&gt;(0, 1)</c>: the low 53 of 64 random bits.</summary>
    private double NextDouble01() => (NextUInt64() & ((1UL << 53) - 1)) * (1.0 / (1UL << 53));

    public void Uniform(Span<float> destination, double from, double to)
    {
        if (!(from <= to)) throw new ArgumentException($"Uniform expects from <= to, got from={from} and to={to}.");
        // uniform_kernel casts both bounds to float first; the kernel computes x * (to - from) + from,
        // which GCC fuses into one multiply-add.
        float lo = (float)from, range = (float)to - lo;
        for (int i = 0; i < destination.Length;)
        {
            var words = TakeWords(destination.Length - i);
            var output = destination.Slice(i, words.Length);
            for (int j = 0; j < words.Length; j++)
                output[j] = MathF.FusedMultiplyAdd((words[j] & 0xFFFFFFu) * (1f / (1 << 24)), range, lo);
            i += words.Length;
        }
    }

    /// <summary>
    /// Up to <paramref name="max"/> consecutive outputs of the stream, straight from the tempered block
    /// (at least one; twists first when the block is used up). Consumes them exactly as that many
    /// <see cref="NextUInt32"/> calls would.
    /// </summary>
    private ReadOnlySpan<uint> TakeWords(int max)
    {
        if (_left == 1)
        {
            Twist();
            _left = StateSize + 1; // the whole new block is still to be read
        }
        int count = Math.Min(max, _left - 1);
        var words = new ReadOnlySpan<uint>(_tempered, (int)_next, count);
        _next += (uint)count;
        _left -= count;
        return words;
    }

    public void Normal(Span<float> destination, double mean, double std)
    {
        if (!(std >= 0)) throw new ArgumentException($"Normal expects std >= 0, got {std}.");
        if (destination.Length >= 16) NormalFill(destination, (float)mean, (float)std);
        else
            for (int i = 0; i < destination.Length; i++) destination[i] = (float)NextNormalDouble(mean, std);
    }

    /// <summary>
    /// <c>at::normal_distribution&lt;double&gt;</c>: Box-Muller in double from two 53-bit uniforms,
    /// returning the cosine value and caching the sine value for the next call.
    /// </summary>
    private double NextNormalDouble(double mean, double std)
    {
        double value;
        if (_nextDoubleNormal is double cached)
        {
            _nextDoubleNormal = null;
            value = cached;
        }
        else
        {
            double u1 = NextDouble01();
            double u2 = NextDouble01();
            double r = Math.Sqrt(-2.0 * Math.Log(1.0 - u2));
            double theta = 2.0 * Math.PI * u1;
            _nextDoubleNormal = r * Math.Sin(theta);
            value = r * Math.Cos(theta);
        }
        return Math.FusedMultiplyAdd(value, std, mean);
    }

    /// <summary>
    /// <c>normal_fill_AVX2</c>: every element gets a float uniform first, then each 16-element block
    /// becomes 16 normals; when the length is not a multiple of 16 the last 16 elements are redrawn
    /// from fresh uniforms and transformed again (overlapping the previous block).
    /// </summary>
    private void NormalFill(Span<float> data, float mean, float std)
    {
        Uniform(data, 0, 1);
        int size = data.Length;
        for (int i = 0; i + 16 <= size; i += 16) NormalFill16(data.Slice(i, 16), mean, std);
        if (size % 16 != 0)
        {
            var tail = data.Slice(size - 16, 16);
            Uniform(tail, 0, 1);
            NormalFill16(tail, mean, std);
        }
    }

    // avx_mathfun.h constants (Cephes), as float.
    private const float SqrtHalf = 0.707106781186547524f;
    private const float LogP0 = 7.0376836292E-2f, LogP1 = -1.1514610310E-1f, LogP2 = 1.1676998740E-1f,
        LogP3 = -1.2420140846E-1f, LogP4 = 1.4249322787E-1f, LogP5 = -1.6668057665E-1f, LogP6 = 2.0000714765E-1f,
        LogP7 = -2.4999993993E-1f, LogP8 = 3.3333331174E-1f, LogQ1 = -2.12194440e-4f, LogQ2 = 0.693359375f;
    private const float MinusDP1 = -0.78515625f, MinusDP2 = -2.4187564849853515625e-4f, MinusDP3 = -3.77489497744594108e-8f;
    private const float SinP0 = -1.9515295891E-4f, SinP1 = 8.3321608736E-3f, SinP2 = -1.6666654611E-1f;
    private const float CosP0 = 2.443315711809948E-005f, CosP1 = -1.388731625493765E-003f, CosP2 = 4.166664568298827E-002f;
    private const float FourOverPi = 1.27323954473516f;
    private const float TwoPi = (float)(2.0 * Math.PI);

    /// <summary>
    /// One <c>normal_fill_16_AVX2</c> block: u1 = 1 − data[0..8), u2 = data[8..16),
    /// r = √(−2·log u1), θ = 2π·u2, data[j] = r·cos θ·std + mean, data[j+8] = r·sin θ·std + mean,
    /// with avx_mathfun's <c>log256_ps</c> and <c>sincos256_ps</c>. Every multiply-add below is fused
    /// exactly where GCC 12 (<c>-O2 -mavx2 -mfma</c>, the default <c>-ffp-contract=fast</c>) fuses it in
    /// PyTorch's build — read off its optimized GIMPLE — so the results match to the last bit.
    /// </summary>
    private static void NormalFill16(Span<float> data, float mean, float std)
    {
        var one = Vector256.Create(1f);
        var u1 = one - Vector256.Create<float>(data[..8]);
        var u2 = Vector256.Create<float>(data[8..]);
        var radius = Vector256.Sqrt(Log(u1) * Vector256.Create(-2f));
        var theta = u2 * Vector256.Create(TwoPi);
        SinCos(theta, out var sin, out var cos);
        var stdV = Vector256.Create(std);
        var meanV = Vector256.Create(mean);
        Vector256.FusedMultiplyAdd(radius * cos, stdV, meanV).CopyTo(data[..8]);
        Vector256.FusedMultiplyAdd(radius * sin, stdV, meanV).CopyTo(data[8..]);
    }

    /// <summary><c>log256_ps</c> for x in (0, 1] (never ≤ 0 or denormal here: x ≥ 2⁻²⁴).</summary>
    private static Vector256<float> Log(Vector256<float> x)
    {
        var one = Vector256.Create(1f);
        x = Vector256.Max(x, Vector256.Create(1.17549435e-38f)); // smallest normal float
        var bits = x.AsInt32();
        var exponent = Vector256.ShiftRightLogical(bits, 23) - Vector256.Create(0x7f);
        // Keep the mantissa with exponent -1: m in [0.5, 1).
        x = (bits & Vector256.Create(~0x7f800000) | Vector256.Create(0.5f).AsInt32()).AsSingle();
        var e = Vector256.ConvertToSingle(exponent) + one;
        var mask = Vector256.LessThan(x, Vector256.Create(SqrtHalf));
        var tmp = x & mask;
        x -= one;
        e -= one & mask;
        x = tmp + x;
        var z = x * x;
        var y = Vector256.FusedMultiplyAdd(x, Vector256.Create(LogP0), Vector256.Create(LogP1));
        y = Vector256.FusedMultiplyAdd(x, y, Vector256.Create(LogP2));
        y = Vector256.FusedMultiplyAdd(x, y, Vector256.Create(LogP3));
        y = Vector256.FusedMultiplyAdd(x, y, Vector256.Create(LogP4));
        y = Vector256.FusedMultiplyAdd(x, y, Vector256.Create(LogP5));
        y = Vector256.FusedMultiplyAdd(x, y, Vector256.Create(LogP6));
        y = Vector256.FusedMultiplyAdd(x, y, Vector256.Create(LogP7));
        y = Vector256.FusedMultiplyAdd(x, y, Vector256.Create(LogP8));
        y = x * y;
        y = Vector256.FusedMultiplyAdd(z, y, e * Vector256.Create(LogQ1));
        y = Vector256.FusedMultiplyAdd(-z, Vector256.Create(0.5f), y);
        x += y;
        return Vector256.FusedMultiplyAdd(e, Vector256.Create(LogQ2), x);
    }

    /// <summary><c>sincos256_ps</c> for θ ≥ 0 (Cephes sinf/cosf with the three-part π/4 reduction).</summary>
    private static void SinCos(Vector256<float> x, out Vector256<float> sin, out Vector256<float> cos)
    {
        var signBitSin = x & Vector256.Create(-0f);
        x = Vector256.Abs(x);
        var j = Vector256.ConvertToInt32(x * Vector256.Create(FourOverPi)); // truncates, like cvttps2dq
        j = (j + Vector256.Create(1)) & Vector256.Create(~1);
        var y = Vector256.ConvertToSingle(j);
        var swapSignSin = Vector256.ShiftLeft(j & Vector256.Create(4), 29).AsSingle();
        var polyMask = Vector256.Equals(j & Vector256.Create(2), Vector256<int>.Zero).AsSingle();
        x = Vector256.FusedMultiplyAdd(y, Vector256.Create(MinusDP1), x);
        x = Vector256.FusedMultiplyAdd(y, Vector256.Create(MinusDP2), x);
        x = Vector256.FusedMultiplyAdd(y, Vector256.Create(MinusDP3), x);
        var signBitCos = Vector256.ShiftLeft(~(j - Vector256.Create(2)) & Vector256.Create(4), 29).AsSingle();
        signBitSin ^= swapSignSin;

        var z = x * x;
        // Cosine polynomial (0 <= x <= π/4): 1 − z/2 + z²·P(z).
        var yc = Vector256.FusedMultiplyAdd(z, Vector256.Create(CosP0), Vector256.Create(CosP1));
        yc = Vector256.FusedMultiplyAdd(z, yc, Vector256.Create(CosP2));
        yc = z * yc;
        yc = Vector256.FusedMultiplyAdd(z, yc, -(z * Vector256.Create(0.5f)));
        yc += Vector256.Create(1f);
        // Sine polynomial: x + x·z·Q(z).
        var ys = Vector256.FusedMultiplyAdd(z, Vector256.Create(SinP0), Vector256.Create(SinP1));
        ys = Vector256.FusedMultiplyAdd(z, ys, Vector256.Create(SinP2));
        ys = z * ys;
        ys = Vector256.FusedMultiplyAdd(x, ys, x);

        var sinFromSinPoly = polyMask & ys;
        var sinFromCosPoly = Vector256.AndNot(yc, polyMask);
        ys -= sinFromSinPoly;
        yc -= sinFromCosPoly;
        sin = (sinFromCosPoly + sinFromSinPoly) ^ signBitSin;
        cos = (ys + yc) ^ signBitCos;
    }

    public void Bernoulli(Span<float> destination, double p)
    {
        if (!(p >= 0 && p <= 1)) throw new ArgumentException($"Bernoulli expects 0 <= p <= 1, got {p}.");
        // bernoulli_scalar_cpu_ without MKL: bernoulli_distribution<double>, i.e. u < p with u = k·2⁻⁵³ for the
        // low 53 bits k of random64(). Scaling by 2⁵³ is exact, so u < p ⇔ k < ⌈p·2⁵³⌉: one integer compare.
        ulong threshold = (ulong)Math.Ceiling(p * 9007199254740992.0);
        const ulong Low53 = (1UL << 53) - 1;
        for (int i = 0; i < destination.Length;)
        {
            int wordPairs = Math.Min(destination.Length - i, (_left - 1) / 2);
            if (wordPairs == 0)
            {
                // A pair that straddles two blocks (or a block to twist first).
                destination[i++] = (NextUInt64() & Low53) < threshold ? 1f : 0f;
                continue;
            }
            var words = TakeWords(2 * wordPairs);
            var output = destination.Slice(i, wordPairs);
            for (int j = 0; j < output.Length; j++)
                output[j] = ((((ulong)words[2 * j] << 32) | words[2 * j + 1]) & Low53) < threshold ? 1f : 0f;
            i += wordPairs;
        }
    }

    /// <summary><c>uniform_int_distribution&lt;int64_t&gt;</c>: 64 random bits modulo 2⁶³.</summary>
    public long RandomInt64() => (long)(NextUInt64() & long.MaxValue);

    public void RandPerm(Span<int> destination)
    {
        // randperm_cpu: Fisher-Yates from the front, swapping i with i + random() % (n - i).
        int n = destination.Length;
        for (int i = 0; i < n; i++) destination[i] = i;
        for (int i = 0; i < n - 1; i++)
        {
            int z = (int)(NextUInt32() % (uint)(n - i));
            (destination[i], destination[i + z]) = (destination[i + z], destination[i]);
        }
    }

    /// <summary>
    /// <c>torch.multinomial(weights, 1)</c>: q ~ Exp(1) for every element (<c>exponential_</c> on a
    /// float32 tensor: −log(1 − u) in double from a 53-bit u, rounded to float), then the first index
    /// of the largest weight / q in float (argmax; a NaN wins as in PyTorch).
    /// </summary>
    /// <remarks>
    /// Every element still takes its 64 random bits, so the stream advances exactly as PyTorch's does, but the
    /// logarithm (most of the cost over a 50,257-token vocabulary) is skipped where it cannot change the pick:
    /// −log(1 − u) ≥ u, so weight / q ≤ weight / u up to the roundings of the logarithm, the float conversion and
    /// the division (together below 2⁻²⁰ relative), and an element with weight · (1 + 10⁻⁶) &lt; best · u cannot be
    /// strictly larger than the best so far. Only when the best is a normal float (no subnormal rounding) and u &gt; 0
    /// (q = 0 gives ∞ or NaN, which must be seen). The pick is the one the full computation gives (tested against it).
    /// </remarks>
    public int Multinomial(ReadOnlySpan<float> weights)
    {
        if (weights.IsEmpty) throw new ArgumentException("Multinomial expects at least one weight.");
        // The same checks as summing every weight in double: no NaN, ∞ or negative weight, and not all zero.
        float min = TensorPrimitives.Min(weights), max = TensorPrimitives.Max(weights);
        if (!(min >= 0) || float.IsInfinity(max))
            throw new ArgumentException("Multinomial: probability tensor contains either inf, nan or element < 0.");
        if (max == 0) throw new ArgumentException("Multinomial: invalid multinomial distribution (sum of probabilities <= 0).");

        const ulong Low53 = (1UL << 53) - 1;
        int best = -1;
        float bestValue = 0;
        for (int i = 0; i < weights.Length;)
        {
            int pairs = Math.Min(weights.Length - i, (_left - 1) / 2);
            if (pairs == 0)
            {
                // A pair that straddles two blocks (or a block to twist first).
                ConsiderDraw(weights[i], NextUInt64() & Low53, i, ref best, ref bestValue);
                i++;
                continue;
            }
            var words = TakeWords(2 * pairs);
            for (int j = 0; j < pairs; j++, i++)
            {
                long bits = (long)((((ulong)words[2 * j] << 32) | words[2 * j + 1]) & Low53);
                float w = weights[i];
                if (bestValue >= SkipFloor && bits != 0 && w * SkipMargin < bestValue * (bits * UnitScale)) continue;
                ConsiderDraw(w, (ulong)bits, i, ref best, ref bestValue);
            }
        }
        return best;
    }

    private const double UnitScale = 1.0 / (1UL << 53);
    // Skipping needs the best ratio to be a normal float (well above float.MinNormal, so its rounding is relative).
    private const float SkipFloor = 1e-30f;
    private const double SkipMargin = 1.000001;

    /// <summary>One element of <see cref="Multinomial"/> computed in full: q = (float)−log(1 − u), weight / q against the best.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ConsiderDraw(float weight, ulong bits53, int i, ref int best, ref float bestValue)
    {
        float q = (float)-Math.Log(1.0 - bits53 * UnitScale);
        float ratio = weight / q;
        if (best < 0 || ratio > bestValue || (float.IsNaN(ratio) && !float.IsNaN(bestValue)))
        {
            best = i;
            bestValue = ratio;
        }
    }

    public IRandomGenerator NewGenerator(ulong seed) => new TorchGenerator(seed);

    /// <summary>
    /// The state in the byte layout of <c>torch.get_rng_state()</c> (5056 bytes: seed, left, seeded,
    /// next, the 624 mt19937 words as uint64, the cached double normal, the cached float normal).
    /// </summary>
    public byte[] GetState()
    {
        var bytes = new byte[StateByteCount];
        var s = bytes.AsSpan();
        BinaryPrimitives.WriteUInt64LittleEndian(s, _seed);
        BinaryPrimitives.WriteInt32LittleEndian(s[8..], _left);
        BinaryPrimitives.WriteInt32LittleEndian(s[12..], 1); // seeded
        BinaryPrimitives.WriteUInt64LittleEndian(s[16..], _next);
        for (int i = 0; i < StateSize; i++) BinaryPrimitives.WriteUInt64LittleEndian(s[(24 + 8 * i)..], _state[i]);
        // Legacy normal_x / normal_y / normal_rho / normal_is_valid at 5016..5044; only normal_y is used.
        if (_nextDoubleNormal is double d)
        {
            BinaryPrimitives.WriteDoubleLittleEndian(s[5024..], d);
            BinaryPrimitives.WriteInt32LittleEndian(s[5040..], 1);
        }
        if (_nextFloatNormal is float f)
        {
            BinaryPrimitives.WriteSingleLittleEndian(s[5048..], f);
            s[5052] = 1;
        }
        return bytes;
    }

    /// <summary>Restores a state from <see cref="GetState"/> or <c>torch.get_rng_state()</c>.</summary>
    public void SetState(ReadOnlySpan<byte> state)
    {
        if (state.Length != StateByteCount)
            throw new ArgumentException($"A torch generator state is {StateByteCount} bytes, got {state.Length}.");
        int left = BinaryPrimitives.ReadInt32LittleEndian(state[8..]);
        ulong next = BinaryPrimitives.ReadUInt64LittleEndian(state[16..]);
        // Between twists next + left = StateSize + 1; left = 1 means "twist on the next draw" (any next).
        if (left < 1 || left > StateSize || next > StateSize || (left > 1 && next + (ulong)left > StateSize + 1))
            throw new ArgumentException("The provided state is not a valid Mersenne Twister state.");
        _seed = BinaryPrimitives.ReadUInt64LittleEndian(state);
        _left = left;
        _next = (uint)next;
        for (int i = 0; i < StateSize; i++) _state[i] = (uint)BinaryPrimitives.ReadUInt64LittleEndian(state[(24 + 8 * i)..]);
        TemperAll();
        _nextDoubleNormal = BinaryPrimitives.ReadInt32LittleEndian(state[5040..]) != 0
            ? BinaryPrimitives.ReadDoubleLittleEndian(state[5024..]) : null;
        _nextFloatNormal = state[5052] != 0 ? BinaryPrimitives.ReadSingleLittleEndian(state[5048..]) : null;
    }
}
