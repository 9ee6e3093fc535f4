using System.Buffers;
using System.Text;

namespace GptSharp.Data;

/// <summary>
/// The text field of a JSON Lines record, found by a validating scan of the UTF-8 line that builds no strings, and unescaped
/// straight into UTF-8 bytes. <see cref="DocumentReader.JsonText"/> uses it first and gives <see cref="System.Text.Json.Utf8JsonReader"/> every
/// line it is <see cref="Scan.Unsure"/> about (an error to report with the reader's words, an escaped key, deep nesting), so
/// the scan only ever answers for lines that are valid JSON (RFC 8259) from the first byte to the last.
/// <para>
/// Why not the reader alone: it reads a string with escapes a byte at a time, then
/// <c>CopyString</c> unescapes it in a second pass, and documents are full of escapes (every new line is <c>\n</c>, and
/// Python's <c>json.dumps</c> writes every non-ASCII character as <c>\uXXXX</c>): that cost as much as a fifth of the
/// tokenizer's time per byte. This scan skips a string's plain runs with a vectorized search.
/// </para>
/// </summary>
internal static class JsonTextField
{
    internal enum Scan
    {
        /// <summary>The field holds a string (escaped or not).</summary>
        Text,

        /// <summary>The field is <c>null</c>.</summary>
        Null,

        /// <summary>Anything else: not valid JSON, no such field, another type, or a form this scan leaves to the full reader.</summary>
        Unsure,
    }

    /// <summary>Deeper values go to the full reader, whose limit (64) then decides; this also bounds the recursion here.</summary>
    private const int MaxDepth = 32;

    /// <summary>What ends a plain run inside a string: the closing quote, an escape, or a control character (not allowed raw).</summary>
    private static readonly SearchValues<byte> StringStops = SearchValues.Create(StringStopBytes());

    private static byte[] StringStopBytes()
    {
        var stops = new byte[34];
        for (int i = 0; i < 32; i++) stops[i] = (byte)i;
        stops[32] = (byte)'"';
        stops[33] = (byte)'\\';
        return stops;
    }

    /// <summary>
    /// Scans a whole line (already valid UTF-8): one JSON object and nothing but white space around it. On
    /// <see cref="Scan.Text"/>, the first top-level member named <paramref name="field"/> (compared as raw bytes; an escaped
    /// key makes the scan unsure) holds a string whose raw bytes, between the quotes, are <c>line[start..(start + length)]</c>,
    /// with escapes when <paramref name="escaped"/>.
    /// </summary>
    internal static Scan Find(ReadOnlySpan<byte> line, ReadOnlySpan<byte> field, out int start, out int length, out bool escaped)
    {
        start = length = 0;
        escaped = false;
        var found = Scan.Unsure;
        int p = SkipSpace(line, 0);
        if (p >= line.Length || line[p] != (byte)'{') return Scan.Unsure;
        p = SkipSpace(line, p + 1);
        if (p < line.Length && line[p] == (byte)'}') return Scan.Unsure; // no members: the reader says which field is missing
        while (true)
        {
            if (p >= line.Length || line[p] != (byte)'"') return Scan.Unsure;
            int keyStart = p + 1;
            if (!SkipString(line, ref p, out bool keyEscaped) || keyEscaped) return Scan.Unsure;
            bool wanted = found == Scan.Unsure && line[keyStart..(p - 1)].SequenceEqual(field);
            p = SkipSpace(line, p);
            if (p >= line.Length || line[p] != (byte)':') return Scan.Unsure;
            p = SkipSpace(line, p + 1);
            if (wanted)
            {
                if (p < line.Length && line[p] == (byte)'"')
                {
                    int valueStart = p + 1;
                    if (!SkipString(line, ref p, out escaped)) return Scan.Unsure;
                    (start, length, found) = (valueStart, p - 1 - valueStart, Scan.Text);
                }
                else if (line[p..].StartsWith("null"u8))
                {
                    p += 4;
                    found = Scan.Null;
                }
                else return Scan.Unsure; // another type: the reader names it
            }
            else if (!SkipValue(line, ref p, 1)) return Scan.Unsure;
            p = SkipSpace(line, p);
            if (p >= line.Length) return Scan.Unsure;
            if (line[p] == (byte)',')
            {
                p = SkipSpace(line, p + 1);
                continue;
            }
            if (line[p] != (byte)'}') return Scan.Unsure;
            p = SkipSpace(line, p + 1);
            return p == line.Length ? found : Scan.Unsure;
        }
    }

    /// <summary>
    /// The UTF-8 text of a JSON string's raw bytes (between its quotes), already checked to be a valid JSON string of valid
    /// UTF-8: unescaped into <paramref name="scratch"/> (grown when needed), or the bytes themselves when there is no escape.
    /// <c>\uXXXX</c> escapes of a surrogate pair become the one character; a lone surrogate becomes U+FFFD, as Python's
    /// <c>json.loads</c> followed by tiktoken's clean-up gives (llm.c's and nanoGPT's data scripts).
    /// </summary>
    internal static ReadOnlySpan<byte> Unescape(ReadOnlySpan<byte> raw, scoped ref byte[] scratch)
    {
        int next = raw.IndexOf((byte)'\\');
        if (next < 0) return raw;
        // Unescaped text is never longer: \n → 1 byte, \uXXXX → at most 3 bytes, a pair (12 bytes) → 4.
        if (scratch.Length < raw.Length) scratch = new byte[Math.Max(raw.Length, 4096)];
        var output = scratch.AsSpan();
        int written = 0, i = 0;
        while (true)
        {
            raw.Slice(i, next).CopyTo(output[written..]);
            written += next;
            i += next;
            byte kind = raw[i + 1];
            i += 2;
            switch (kind)
            {
                case (byte)'u':
                    int unit = Hex4(raw.Slice(i, 4));
                    i += 4;
                    int scalar = unit;
                    if (char.IsHighSurrogate((char)unit) && i + 6 <= raw.Length && raw[i] == (byte)'\\' && raw[i + 1] == (byte)'u'
                        && Hex4(raw.Slice(i + 2, 4)) is int low && char.IsLowSurrogate((char)low))
                    {
                        scalar = char.ConvertToUtf32((char)unit, (char)low);
                        i += 6;
                    }
                    else if (char.IsSurrogate((char)unit)) scalar = 0xFFFD;
                    written += new Rune(scalar).EncodeToUtf8(output[written..]);
                    break;
                case (byte)'b': output[written++] = (byte)'\b'; break;
                case (byte)'f': output[written++] = (byte)'\f'; break;
                case (byte)'n': output[written++] = (byte)'\n'; break;
                case (byte)'r': output[written++] = (byte)'\r'; break;
                case (byte)'t': output[written++] = (byte)'\t'; break;
                default: output[written++] = kind; break; // \" \\ \/
            }
            next = raw[i..].IndexOf((byte)'\\');
            if (next < 0)
            {
                raw[i..].CopyTo(output[written..]);
                return output[..(written + raw.Length - i)];
            }
        }
    }

    private static int SkipSpace(ReadOnlySpan<byte> line, int p)
    {
        while (p < line.Length && line[p] is (byte)' ' or (byte)'\t' or (byte)'\n' or (byte)'\r') p++;
        return p;
    }

    /// <summary>Moves <paramref name="p"/> from a string's opening quote past its closing quote; false if it is not a valid JSON string.</summary>
    private static bool SkipString(ReadOnlySpan<byte> line, ref int p, out bool escaped)
    {
        escaped = false;
        int i = p + 1;
        while (true)
        {
            int k = line[i..].IndexOfAny(StringStops);
            if (k < 0) return false;
            i += k;
            byte b = line[i];
            if (b == (byte)'"')
            {
                p = i + 1;
                return true;
            }
            if (b != (byte)'\\' || i + 1 >= line.Length) return false; // a raw control character, or a cut escape
            escaped = true;
            switch (line[i + 1])
            {
                case (byte)'"' or (byte)'\\' or (byte)'/' or (byte)'b' or (byte)'f' or (byte)'n' or (byte)'r' or (byte)'t':
                    i += 2;
                    break;
                case (byte)'u':
                    if (i + 6 > line.Length || Hex4(line.Slice(i + 2, 4)) < 0) return false;
                    i += 6;
                    break;
                default:
                    return false;
            }
        }
    }

    private static bool SkipValue(ReadOnlySpan<byte> line, ref int p, int depth)
    {
        if (p >= line.Length) return false;
        switch (line[p])
        {
            case (byte)'"':
                return SkipString(line, ref p, out _);
            case (byte)'{':
            case (byte)'[':
                if (depth >= MaxDepth) return false;
                bool isObject = line[p] == (byte)'{';
                byte close = isObject ? (byte)'}' : (byte)']';
                p = SkipSpace(line, p + 1);
                if (p < line.Length && line[p] == close)
                {
                    p++;
                    return true;
                }
                while (true)
                {
                    if (isObject)
                    {
                        if (p >= line.Length || line[p] != (byte)'"' || !SkipString(line, ref p, out _)) return false;
                        p = SkipSpace(line, p);
                        if (p >= line.Length || line[p] != (byte)':') return false;
                        p = SkipSpace(line, p + 1);
                    }
                    if (!SkipValue(line, ref p, depth + 1)) return false;
                    p = SkipSpace(line, p);
                    if (p >= line.Length) return false;
                    if (line[p] == close)
                    {
                        p++;
                        return true;
                    }
                    if (line[p] != (byte)',') return false;
                    p = SkipSpace(line, p + 1);
                }
            case (byte)'t': return SkipLiteral(line, ref p, "true"u8);
            case (byte)'f': return SkipLiteral(line, ref p, "false"u8);
            case (byte)'n': return SkipLiteral(line, ref p, "null"u8);
            default: return SkipNumber(line, ref p);
        }
    }

    private static bool SkipLiteral(ReadOnlySpan<byte> line, ref int p, ReadOnlySpan<byte> literal)
    {
        if (!line[p..].StartsWith(literal)) return false;
        p += literal.Length;
        return true; // what follows is checked by the caller (a delimiter or white space)
    }

    /// <summary>RFC 8259's number: <c>-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?</c>.</summary>
    private static bool SkipNumber(ReadOnlySpan<byte> line, ref int p)
    {
        int i = p;
        if (line[i] == (byte)'-') i++;
        if (i >= line.Length || !char.IsAsciiDigit((char)line[i])) return false;
        if (line[i++] != (byte)'0')
            while (i < line.Length && char.IsAsciiDigit((char)line[i])) i++;
        if (i < line.Length && line[i] == (byte)'.')
        {
            if (++i >= line.Length || !char.IsAsciiDigit((char)line[i])) return false;
            while (i < line.Length && char.IsAsciiDigit((char)line[i])) i++;
        }
        if (i < line.Length && (line[i] | 0x20) == (byte)'e')
        {
            if (++i < line.Length && line[i] is (byte)'+' or (byte)'-') i++;
            if (i >= line.Length || !char.IsAsciiDigit((char)line[i])) return false;
            while (i < line.Length && char.IsAsciiDigit((char)line[i])) i++;
        }
        p = i;
        return true;
    }

    /// <summary>The value of four hex digits, or -1.</summary>
    private static int Hex4(ReadOnlySpan<byte> digits)
    {
        int value = 0;
        foreach (byte d in digits)
        {
            int v = HexDigit(d);
            if (v < 0) return -1;
            value = value << 4 | v;
        }
        return value;
    }

    private static int HexDigit(byte d) => d switch
    {
        >= (byte)'0' and <= (byte)'9' => d - '0',
        >= (byte)'a' and <= (byte)'f' => d - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => d - 'A' + 10,
        _ => -1,
    };
}
