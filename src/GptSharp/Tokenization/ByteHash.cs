using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace GptSharp.Tokenization;

/// <summary>
/// A fast 64-bit hash of a short byte string (a pre-tokenized piece), shared by the vocabulary table and the
/// merge cache so that each piece is hashed once. Reads 8 bytes at a time (overlapping loads for the tail)
/// and folds with a 64×64→128-bit multiply, as wyhash does.
/// </summary>
internal static class ByteHash
{
    private const ulong Seed = 0x9E37_79B9_7F4A_7C15UL;
    private const ulong Multiplier = 0xA076_1D64_78BD_642FUL;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Hash(ReadOnlySpan<byte> key)
    {
        ref byte p = ref MemoryMarshal.GetReference(key);
        int length = key.Length;
        ulong h = Seed ^ (ulong)length;
        if (length >= 8)
        {
            int i = 0;
            for (; i + 8 <= length; i += 8)
                h = Mix(h ^ Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, i)));
            if (i < length)
                h = Mix(h ^ Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref p, length - 8)));
            return h;
        }
        ulong v;
        if (length >= 4)
            v = Unsafe.ReadUnaligned<uint>(ref p) | ((ulong)Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref p, length - 4)) << 32);
        else if (length > 0)
            v = p | ((ulong)Unsafe.Add(ref p, length >> 1) << 8) | ((ulong)Unsafe.Add(ref p, length - 1) << 16);
        else
            v = 0;
        return Mix(h ^ v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Mix(ulong x)
    {
        ulong high = Math.BigMul(x, Multiplier, out ulong low);
        return high ^ low;
    }
}
