using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;

namespace GptSharp.Tokenization;

/// <summary>
/// GPT-2's pre-tokenization, written out by hand over UTF-8 bytes. It cuts text exactly where the regex
/// <c>'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</c> (as tiktoken's Rust
/// regex runs it) cuts it, with no backtracking and no allocation.
/// </summary>
/// <remarks>
/// Every code point falls in exactly one of four classes: letter (<c>\p{L}</c>: Lu Ll Lt Lm Lo), number
/// (<c>\p{N}</c>: Nd Nl No), white space (<c>\s</c>: Unicode White_Space) or other. Classes are judged per
/// code point (not per UTF-16 unit), as Rust's regex does; .NET's Rune data agrees with it on every scalar.
/// At each position the regex tries its alternatives in order, and one of the last four always matches, so
/// the pieces tile the text:
/// <list type="bullet">
/// <item>an ASCII apostrophe followed by s, t, m, d, re, ve or ll (lower case only) is a contraction;</item>
/// <item>otherwise a run of letters, of numbers, or of "other", optionally led by one U+0020 space;</item>
/// <item>a white-space run followed by a non-space gives back its last character (<c>\s+(?!\S)</c>), so that
/// the word after it can take a leading space; a single white-space character before a non-space is a piece
/// of its own (<c>\s+</c>); a run at the end of the text is one piece.</item>
/// </list>
/// </remarks>
internal static class PreTokenizer
{
    public const byte Letter = 1;
    public const byte Number = 2;
    public const byte Space = 3;
    public const byte Other = 4;

    // Class of every BMP code point (surrogates never occur in valid UTF-8); astral ones are looked up directly.
    private static readonly byte[] BmpClass = BuildBmpTable();

    private static byte[] BuildBmpTable()
    {
        var table = new byte[0x10000];
        for (int c = 0; c < table.Length; c++)
            table[c] = c is >= 0xD800 and <= 0xDFFF ? Other : ClassOf(new Rune(c));
        return table;
    }

    /// <summary>The class of one code point (the slow, table-free way).</summary>
    public static byte ClassOf(Rune rune)
    {
        if (Rune.IsWhiteSpace(rune)) return Space;
        switch (Rune.GetUnicodeCategory(rune))
        {
            case UnicodeCategory.UppercaseLetter:
            case UnicodeCategory.LowercaseLetter:
            case UnicodeCategory.TitlecaseLetter:
            case UnicodeCategory.ModifierLetter:
            case UnicodeCategory.OtherLetter:
                return Letter;
            case UnicodeCategory.DecimalDigitNumber:
            case UnicodeCategory.LetterNumber:
            case UnicodeCategory.OtherNumber:
                return Number;
            default:
                return Other;
        }
    }

    /// <summary>True for an ASCII byte that is white space (tab, LF, VT, FF, CR, space).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsAsciiSpace(byte b) => b < 0x80 && BmpClass[b] == Space;

    /// <summary>Class of the code point starting at <paramref name="i"/> of valid UTF-8; its length in bytes in <paramref name="length"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte ClassAt(ReadOnlySpan<byte> s, int i, out int length)
    {
        uint b0 = s[i];
        if (b0 < 0x80)
        {
            length = 1;
            return BmpClass[b0];
        }
        return NonAsciiClassAt(s, i, out length);
    }

    private static byte NonAsciiClassAt(ReadOnlySpan<byte> s, int i, out int length)
    {
        uint b0 = s[i];
        if (b0 < 0xE0)
        {
            length = 2;
            return BmpClass[((b0 & 0x1F) << 6) | (s[i + 1] & 0x3Fu)];
        }
        if (b0 < 0xF0)
        {
            length = 3;
            return BmpClass[((b0 & 0x0F) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu)];
        }
        length = 4;
        int scalar = (int)(((b0 & 0x07) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) | (s[i + 3] & 0x3Fu));
        return ClassOf(new Rune(scalar));
    }

    /// <summary>
    /// End (exclusive) of the piece that starts at <paramref name="start"/> of <paramref name="s"/>, which must be
    /// valid UTF-8 and cut only at code point boundaries.
    /// </summary>
    public static int PieceEnd(ReadOnlySpan<byte> s, int start)
    {
        int n = s.Length;
        byte first = s[start];

        if (first == (byte)'\'' && start + 1 < n)
        {
            byte c = s[start + 1];
            if (c is (byte)'s' or (byte)'t' or (byte)'m' or (byte)'d') return start + 2;
            if (start + 2 < n)
            {
                byte c2 = s[start + 2];
                if ((c2 == (byte)'e' && c is (byte)'r' or (byte)'v') || (c == (byte)'l' && c2 == (byte)'l')) return start + 3;
            }
        }

        byte cls = ClassAt(s, start, out int length);
        int j = start + length;
        if (first == (byte)' ' && j < n)
        {
            // " ?X+": a single U+0020 leads a run of letters, numbers or other.
            byte next = ClassAt(s, j, out int nextLength);
            if (next != Space)
            {
                cls = next;
                j += nextLength;
            }
        }

        if (cls == Space)
        {
            int lastStart = start;
            while (j < n)
            {
                byte b = s[j];
                int l;
                if (b < 0x80)
                {
                    if (BmpClass[b] != Space) break;
                    l = 1;
                }
                else if (NonAsciiClassAt(s, j, out l) != Space) break;
                lastStart = j;
                j += l;
            }
            // At the end of the text the whole run is one piece; before a non-space it keeps all but its last
            // character, unless that is its only character.
            return j == n || lastStart == start ? j : lastStart;
        }

        while (j < n)
        {
            byte b = s[j];
            if (b < 0x80)
            {
                if (BmpClass[b] != cls) break;
                j++;
            }
            else
            {
                if (NonAsciiClassAt(s, j, out int l) != cls) break;
                j += l;
            }
        }
        return j;
    }
}
