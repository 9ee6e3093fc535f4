namespace GptSharp.Formats.TensorFlow;

/// <summary>
/// The few protobuf wire-format rules needed to decode TensorFlow's bundle messages: varint tags,
/// varint / fixed32 / fixed64 / length-delimited fields, unknown fields skipped by wire type.
/// Errors name the file (<paramref name="source"/>) so a corrupt index reports where it came from.
/// </summary>
internal ref struct ProtoReader(ReadOnlySpan<byte> data, string source)
{
    private readonly ReadOnlySpan<byte> _data = data;
    private int _pos;

    public readonly bool AtEnd => _pos >= _data.Length;

    /// <summary>Reads the next tag; returns false at the end of the message.</summary>
    public bool Next(out int field, out int wireType)
    {
        if (AtEnd) { field = 0; wireType = 0; return false; }
        ulong tag = ReadVarint();
        field = (int)(tag >> 3);
        wireType = (int)(tag & 7);
        if (field == 0) throw Corrupt("field number 0");
        return true;
    }

    public ulong ReadVarint()
    {
        ulong value = 0;
        for (int shift = 0; shift < 70; shift += 7)
        {
            if (_pos >= _data.Length) throw Corrupt("truncated varint");
            byte b = _data[_pos++];
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80) return value;
        }
        throw Corrupt("varint longer than 10 bytes");
    }

    public uint ReadFixed32()
    {
        if (_pos + 4 > _data.Length) throw Corrupt("truncated fixed32");
        uint v = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(_data[_pos..]);
        _pos += 4;
        return v;
    }

    public ReadOnlySpan<byte> ReadBytes()
    {
        ulong length = ReadVarint();
        if (length > (ulong)(_data.Length - _pos)) throw Corrupt("length-delimited field runs past the end");
        var bytes = _data.Slice(_pos, (int)length);
        _pos += (int)length;
        return bytes;
    }

    public void Skip(int wireType)
    {
        switch (wireType)
        {
            case 0: ReadVarint(); break;
            case 1: Advance(8); break;
            case 2: ReadBytes(); break;
            case 5: Advance(4); break;
            default: throw Corrupt($"unsupported wire type {wireType}");
        }
    }

    /// <summary>Throws unless the field has the expected wire type (a mismatch means corrupt bytes).</summary>
    public readonly void Expect(int wireType, int expected, string fieldName)
    {
        if (wireType != expected) throw Corrupt($"field {fieldName} has wire type {wireType}, expected {expected}");
    }

    private void Advance(int n)
    {
        if (_pos + n > _data.Length) throw Corrupt("truncated field");
        _pos += n;
    }

    private readonly InvalidDataException Corrupt(string what) => new($"{source}: malformed protobuf message ({what}).");
}
