using System.Buffers.Binary;
using System.Numerics;

namespace GptSharp.Formats.TensorFlow;

/// <summary>
/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum LevelDB tables and TensorFlow
/// bundles use, plus TensorFlow's "masking" of stored checksums (tsl/lib/hash/crc32c.h).
/// <see cref="BitOperations.Crc32C(uint, ulong)"/> is the raw update step: the SSE4.2/ARM crc32c
/// instruction where the CPU has it, a software table otherwise.
/// </summary>
internal static class Crc32C
{
    private const uint MaskDelta = 0xa282ead8u;

    /// <summary>Initial state for <see cref="Update"/>.</summary>
    public const uint Initial = 0xFFFFFFFFu;

    /// <summary>Folds <paramref name="data"/> into a running state (start from <see cref="Initial"/>).</summary>
    public static uint Update(uint state, ReadOnlySpan<byte> data)
    {
        while (data.Length >= 8)
        {
            state = BitOperations.Crc32C(state, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }
        foreach (byte b in data) state = BitOperations.Crc32C(state, b);
        return state;
    }

    /// <summary>The final checksum of a running state.</summary>
    public static uint Finish(uint state) => ~state;

    /// <summary>crc32c of <paramref name="data"/> (check value: "123456789" → 0xE3069283).</summary>
    public static uint Compute(ReadOnlySpan<byte> data) => Finish(Update(Initial, data));

    /// <summary>
    /// TensorFlow stores crcs "masked" because a crc of data that itself contains crcs is weak:
    /// rotate right by 15 bits and add a constant.
    /// </summary>
    public static uint Mask(uint crc) => ((crc >> 15) | (crc << 17)) + MaskDelta;

    /// <summary>Inverse of <see cref="Mask"/>.</summary>
    public static uint Unmask(uint masked)
    {
        uint rot = masked - MaskDelta;
        return (rot >> 17) | (rot << 15);
    }
}
