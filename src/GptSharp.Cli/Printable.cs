using System.Text;

namespace GptSharp.Cli;

/// <summary>
/// Strings from files (tensor names, metadata, paths, messages that quote them) shown with control characters escaped:
/// a name holding ESC sequences could otherwise recolour, move the cursor, retitle or rewrite the user's terminal.
/// </summary>
internal static class Printable
{
    public static string Escape(string? text)
    {
        if (string.IsNullOrEmpty(text)) return text ?? "";
        if (!text.Any(NeedsEscape)) return text;
        var sb = new StringBuilder(text.Length + 16);
        foreach (char c in text)
        {
            if (!NeedsEscape(c)) sb.Append(c);
            else if (c == '\n') sb.Append("\\n");
            else if (c == '\r') sb.Append("\\r");
            else if (c == '\t') sb.Append("\\t");
            else if (c <= 0xFF) sb.Append($"\\x{(int)c:x2}");
            else sb.Append($"\\u{(int)c:x4}");
        }
        return sb.ToString();
    }

    // C0/C1 controls (ESC, BEL, CSI...), and the bidirectional overrides that make text display in another order than it reads.
    private static bool NeedsEscape(char c) => char.IsControl(c) || c is >= '\u202A' and <= '\u202E' or >= '\u2066' and <= '\u2069' or '\u2028' or '\u2029';
}
