namespace GptSharp.Formats.TensorFlow;

/// <summary>
/// Decompressor for raw Snappy blocks (google/snappy format_description.txt, no framing), the
/// compression LevelDB tables written by TensorFlow 1.0/1.1 use for their blocks.
/// </summary>
internal static class Snappy
{
    /// <summary>Decompresses one Snappy block; <paramref name="source"/> names the file in error messages.</summary>
    public static byte[] Decompress(ReadOnlySpan<byte> input, string source)
    {
        int pos = 0;
        ulong declared = ReadVarint(input, ref pos, source);
        // Each element of the stream expands to at most 64 bytes for 2 bytes read (a copy), so a larger declared
        // length cannot be honest; checking it first keeps a few bytes from allocating gigabytes.
        if (declared > int.MaxValue || declared > 32UL * (ulong)input.Length)
            throw Corrupt(source, $"declared length {declared} is too large for {input.Length} compressed bytes");
        var output = new byte[(int)declared];
        int written = 0;
        while (pos < input.Length)
        {
            byte tag = input[pos++];
            int length, offset;
            switch (tag & 3)
            {
                case 0: // literal: length-1 in the tag, or in 1..4 following bytes
                    long literal = tag >> 2;
                    if (literal >= 60)
                    {
                        int extra = (int)literal - 59;
                        if (pos + extra > input.Length) throw Corrupt(source, "literal length runs past the end");
                        literal = 0;
                        for (int i = 0; i < extra; i++) literal |= (long)input[pos + i] << (8 * i);
                        pos += extra;
                    }
                    literal += 1;
                    if (literal > input.Length - pos) throw Corrupt(source, "literal runs past the end of the input");
                    if (literal > output.Length - written) throw Corrupt(source, "literal runs past the declared length");
                    input.Slice(pos, (int)literal).CopyTo(output.AsSpan(written));
                    pos += (int)literal;
                    written += (int)literal;
                    continue;
                case 1: // copy, 11-bit offset
                    if (pos + 1 > input.Length) throw Corrupt(source, "copy runs past the end");
                    length = 4 + ((tag >> 2) & 7);
                    offset = ((tag >> 5) << 8) | input[pos];
                    pos += 1;
                    break;
                case 2: // copy, 16-bit offset
                    if (pos + 2 > input.Length) throw Corrupt(source, "copy runs past the end");
                    length = (tag >> 2) + 1;
                    offset = input[pos] | (input[pos + 1] << 8);
                    pos += 2;
                    break;
                default: // copy, 32-bit offset
                    if (pos + 4 > input.Length) throw Corrupt(source, "copy runs past the end");
                    length = (tag >> 2) + 1;
                    uint wide = (uint)(input[pos] | (input[pos + 1] << 8) | (input[pos + 2] << 16) | (input[pos + 3] << 24));
                    if (wide > int.MaxValue) throw Corrupt(source, "copy offset is too large");
                    offset = (int)wide;
                    pos += 4;
                    break;
            }
            if (offset == 0 || offset > written) throw Corrupt(source, $"copy offset {offset} is outside the {written} bytes written so far");
            if (length > output.Length - written) throw Corrupt(source, "copy runs past the declared length");
            // Forward byte-by-byte: a copy may overlap its own output (length > offset repeats a pattern).
            for (int i = 0; i < length; i++) output[written + i] = output[written - offset + i];
            written += length;
        }
        if (written != output.Length) throw Corrupt(source, $"produced {written} bytes, the header declared {output.Length}");
        return output;
    }

    private static ulong ReadVarint(ReadOnlySpan<byte> input, ref int pos, string source)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (pos >= input.Length) throw Corrupt(source, "truncated length header");
            byte b = input[pos++];
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80) return value;
        }
        throw Corrupt(source, "length header is not a valid varint");
    }

    private static InvalidDataException Corrupt(string source, string what) =>
        new($"{source}: corrupt Snappy block ({what}).");
}
