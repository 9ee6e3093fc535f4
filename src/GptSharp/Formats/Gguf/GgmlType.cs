using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace GptSharp.Formats.Gguf;

/// <summary>ggml's tensor element types, with the numbers GGUF stores (ggml.h's <c>enum ggml_type</c>).</summary>
internal enum GgmlType : uint
{
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35,
}

/// <summary>
/// Block geometry of each <see cref="GgmlType"/> (elements per block, bytes per block: ggml's type traits), and the
/// conversions GptSharp does itself: every type to float32 that GPT-2 files use (f32, f16, bf16, q8_0, q4_0, q4_1,
/// q5_0, q5_1, q4_K, q5_K, q6_K), and float32 to f16 and q8_0 for writing. The block layouts are ggml-quants' structs
/// (<c>block_q8_0</c> …): little-endian, packed, one fp16 scale (and min) per block.
/// </summary>
internal static class GgmlTypes
{
    /// <summary>Elements in one block of a k-quant (ggml's QK_K).</summary>
    public const int SuperBlock = 256;

    /// <summary>(elements per block, bytes per block), or null for a number ggml does not define (or an obsolete type).</summary>
    public static (int Elements, int Bytes)? Geometry(GgmlType type) => type switch
    {
        GgmlType.F32 or GgmlType.I32 => (1, 4),
        GgmlType.F16 or GgmlType.BF16 or GgmlType.I16 => (1, 2),
        GgmlType.I8 => (1, 1),
        GgmlType.I64 or GgmlType.F64 => (1, 8),
        GgmlType.Q4_0 => (32, 18),
        GgmlType.Q4_1 => (32, 20),
        GgmlType.Q5_0 => (32, 22),
        GgmlType.Q5_1 => (32, 24),
        GgmlType.Q8_0 => (32, 34),
        GgmlType.Q8_1 => (32, 36),
        GgmlType.Q2_K => (SuperBlock, 84),
        GgmlType.Q3_K => (SuperBlock, 110),
        GgmlType.Q4_K => (SuperBlock, 144),
        GgmlType.Q5_K => (SuperBlock, 176),
        GgmlType.Q6_K => (SuperBlock, 210),
        GgmlType.Q8_K => (SuperBlock, 292),
        GgmlType.IQ2_XXS => (SuperBlock, 66),
        GgmlType.IQ2_XS => (SuperBlock, 74),
        GgmlType.IQ3_XXS => (SuperBlock, 98),
        GgmlType.IQ1_S => (SuperBlock, 50),
        GgmlType.IQ4_NL => (32, 18),
        GgmlType.IQ3_S => (SuperBlock, 110),
        GgmlType.IQ2_S => (SuperBlock, 82),
        GgmlType.IQ4_XS => (SuperBlock, 136),
        GgmlType.IQ1_M => (SuperBlock, 56),
        GgmlType.TQ1_0 => (SuperBlock, 54),
        GgmlType.TQ2_0 => (SuperBlock, 66),
        _ => null,
    };

    /// <summary>ggml's lower-case name (<c>q8_0</c>, <c>q4_K</c>), or the number for an unknown type.</summary>
    public static string Name(GgmlType type) => Enum.IsDefined(type) ? type.ToString().ToLowerInvariant().Replace("_k", "_K") : $"type {(uint)type}";

    /// <summary>True for the types <see cref="Dequantize"/> reads.</summary>
    public static bool CanDequantize(GgmlType type) => type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 or GgmlType.Q8_0
        or GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0 or GgmlType.Q5_1 or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K;

    /// <summary>The types <see cref="Dequantize"/> reads, for error messages.</summary>
    public const string ReadableTypes = "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q5_K, q6_K";

    /// <summary>Bytes of <paramref name="elements"/> elements (a whole number of blocks) of <paramref name="type"/>.</summary>
    public static long ByteCount(GgmlType type, long elements)
    {
        var (n, bytes) = Geometry(type) ?? throw new ArgumentException($"unknown ggml type {(uint)type}");
        return elements / n * bytes;
    }

    /// <summary>
    /// Converts whole blocks of <paramref name="type"/> in <paramref name="source"/> to float32: <paramref name="destination"/>
    /// holds a multiple of the block size and <paramref name="source"/> exactly its bytes.
    /// </summary>
    public static void Dequantize(GgmlType type, ReadOnlySpan<byte> source, Span<float> destination)
    {
        switch (type)
        {
            case GgmlType.F32:
                MemoryMarshal.Cast<byte, float>(source).CopyTo(destination);
                return;
            case GgmlType.F16:
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(source), destination);
                return;
            case GgmlType.BF16:
                // bfloat16 is the high half of a float32: widening is exact.
                for (int i = 0; i < destination.Length; i++)
                    destination[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]) << 16);
                return;
        }
        var (n, bytes) = Geometry(type)!.Value;
        for (int b = 0; b < destination.Length / n; b++)
        {
            var block = source.Slice(b * bytes, bytes);
            var y = destination.Slice(b * n, n);
            switch (type)
            {
                case GgmlType.Q8_0: Q8_0(block, y); break;
                case GgmlType.Q4_0: Q4(block, y, hasMin: false); break;
                case GgmlType.Q4_1: Q4(block, y, hasMin: true); break;
                case GgmlType.Q5_0: Q5(block, y, hasMin: false); break;
                case GgmlType.Q5_1: Q5(block, y, hasMin: true); break;
                case GgmlType.Q4_K: Q4K(block, y); break;
                case GgmlType.Q5_K: Q5K(block, y); break;
                case GgmlType.Q6_K: Q6K(block, y); break;
                default: throw new NotSupportedException($"ggml type {Name(type)} cannot be read (GptSharp reads {ReadableTypes}).");
            }
        }
    }

    private static float Half(ReadOnlySpan<byte> b, int at) => (float)BinaryPrimitives.ReadHalfLittleEndian(b[at..]);

    // block_q8_0: fp16 d, int8 qs[32]; x = d · q.
    private static void Q8_0(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0);
        for (int j = 0; j < 32; j++) y[j] = d * (sbyte)block[2 + j];
    }

    // block_q4_0: fp16 d, nibbles qs[16] (low nibbles are elements 0-15, high nibbles 16-31); x = d · (q − 8).
    // block_q4_1: fp16 d, fp16 m, qs[16]; x = d · q + m.
    private static void Q4(ReadOnlySpan<byte> block, Span<float> y, bool hasMin)
    {
        float d = Half(block, 0), m = hasMin ? Half(block, 2) : 0f;
        var qs = block[(hasMin ? 4 : 2)..];
        int offset = hasMin ? 0 : 8;
        for (int j = 0; j < 16; j++)
        {
            y[j] = ((qs[j] & 0x0F) - offset) * d + m;
            y[j + 16] = ((qs[j] >> 4) - offset) * d + m;
        }
    }

    // block_q5_0: fp16 d, uint32 qh (the fifth bits), qs[16]; x = d · (q − 16). block_q5_1: fp16 d, fp16 m, qh, qs; x = d · q + m.
    private static void Q5(ReadOnlySpan<byte> block, Span<float> y, bool hasMin)
    {
        float d = Half(block, 0), m = hasMin ? Half(block, 2) : 0f;
        int at = hasMin ? 4 : 2;
        uint qh = BinaryPrimitives.ReadUInt32LittleEndian(block[at..]);
        var qs = block[(at + 4)..];
        int offset = hasMin ? 0 : 16;
        for (int j = 0; j < 16; j++)
        {
            int h0 = (int)((qh >> j) << 4) & 0x10, h1 = (int)(qh >> (j + 12)) & 0x10;
            y[j] = (((qs[j] & 0x0F) | h0) - offset) * d + m;
            y[j + 16] = (((qs[j] >> 4) | h1) - offset) * d + m;
        }
    }

    // block_q4_K: fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins for 8 sub-blocks of 32, qs[128] nibbles.
    private static void Q4K(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0), dmin = Half(block, 2);
        var scales = block.Slice(4, 12);
        var q = block[16..];
        int s = 0;
        for (int j = 0; j < SuperBlock; j += 64, s += 2)
        {
            ScaleMinK4(s, scales, out int sc1, out int m1);
            ScaleMinK4(s + 1, scales, out int sc2, out int m2);
            float d1 = d * sc1, min1 = dmin * m1, d2 = d * sc2, min2 = dmin * m2;
            var qj = q.Slice(j / 2, 32);
            for (int l = 0; l < 32; l++) y[j + l] = d1 * (qj[l] & 0x0F) - min1;
            for (int l = 0; l < 32; l++) y[j + 32 + l] = d2 * (qj[l] >> 4) - min2;
        }
    }

    // block_q5_K: fp16 d, fp16 dmin, 12 bytes of scales and mins, qh[32] (the fifth bits), qs[128] nibbles.
    private static void Q5K(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 0), dmin = Half(block, 2);
        var scales = block.Slice(4, 12);
        var qh = block.Slice(16, 32);
        var q = block[48..];
        int s = 0, u1 = 1, u2 = 2;
        for (int j = 0; j < SuperBlock; j += 64, s += 2, u1 <<= 2, u2 <<= 2)
        {
            ScaleMinK4(s, scales, out int sc1, out int m1);
            ScaleMinK4(s + 1, scales, out int sc2, out int m2);
            float d1 = d * sc1, min1 = dmin * m1, d2 = d * sc2, min2 = dmin * m2;
            var qj = q.Slice(j / 2, 32);
            for (int l = 0; l < 32; l++) y[j + l] = d1 * ((qj[l] & 0x0F) + ((qh[l] & u1) != 0 ? 16 : 0)) - min1;
            for (int l = 0; l < 32; l++) y[j + 32 + l] = d2 * ((qj[l] >> 4) + ((qh[l] & u2) != 0 ? 16 : 0)) - min2;
        }
    }

    private static void ScaleMinK4(int j, ReadOnlySpan<byte> q, out int scale, out int min)
    {
        if (j < 4)
        {
            scale = q[j] & 63;
            min = q[j + 4] & 63;
        }
        else
        {
            scale = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
            min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }

    // block_q6_K: ql[128] low nibbles, qh[64] high 2 bits, int8 scales[16] (one per 16 elements), fp16 d; x = d · scale · (q − 32).
    private static void Q6K(ReadOnlySpan<byte> block, Span<float> y)
    {
        float d = Half(block, 208);
        for (int n = 0; n < 2; n++)
        {
            var ql = block.Slice(64 * n, 64);
            var qh = block.Slice(128 + 32 * n, 32);
            var sc = block.Slice(192 + 8 * n, 8);
            var yn = y.Slice(128 * n, 128);
            for (int l = 0; l < 32; l++)
            {
                int s = l / 16;
                int q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                yn[l] = d * (sbyte)sc[s] * q1;
                yn[l + 32] = d * (sbyte)sc[s + 2] * q2;
                yn[l + 64] = d * (sbyte)sc[s + 4] * q3;
                yn[l + 96] = d * (sbyte)sc[s + 6] * q4;
            }
        }
    }

    /// <summary>
    /// float32 → <paramref name="type"/> (f32, f16 or q8_0) for whole blocks. q8_0 as ggml's reference quantizer does it:
    /// d = max |x| / 127, q = round(x / d) half away from zero (C's <c>roundf</c>), d stored as fp16.
    /// </summary>
    public static void Quantize(GgmlType type, ReadOnlySpan<float> source, Span<byte> destination)
    {
        switch (type)
        {
            case GgmlType.F32:
                MemoryMarshal.AsBytes(source).CopyTo(destination);
                return;
            case GgmlType.F16:
                TensorPrimitives.ConvertToHalf(source, MemoryMarshal.Cast<byte, Half>(destination));
                return;
            case GgmlType.Q8_0:
                for (int b = 0; b < source.Length / 32; b++)
                {
                    var x = source.Slice(32 * b, 32);
                    var block = destination.Slice(34 * b, 34);
                    float amax = MathF.Abs(TensorPrimitives.MaxMagnitude(x));
                    if (!float.IsFinite(amax)) throw new ArgumentException("cannot quantize a weight that is NaN or infinite.");
                    float d = amax / 127f, id = d != 0f ? 1f / d : 0f;
                    BinaryPrimitives.WriteHalfLittleEndian(block, (Half)d);
                    for (int j = 0; j < 32; j++) block[2 + j] = (byte)(sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
                }
                return;
            default:
                throw new NotSupportedException($"GptSharp writes ggml types f32, f16 and q8_0, not {Name(type)}.");
        }
    }
}
