using System.Text;

namespace GptSharp.Serving;

/// <summary>
/// GPT-2 is a base model: it continues text. A chat becomes a plain-text transcript it can continue, and the
/// assistant's reply is what follows the last <c>Assistant:</c> up to the next <c>\nUser:</c> line:
/// <code>
/// {system message}            (only when there is one, followed by a blank line)
/// User: {message}
/// Assistant: {reply}
/// User: {message}
/// Assistant:
/// </code>
/// The reply's leading spaces are dropped. <see cref="Text"/> is this template, shown by <c>GET /v1/models</c>.
/// Content is ordinary text: <c>&lt;|endoftext|&gt;</c> in a message is its characters, never the special token
/// (<see cref="Encode"/>), and a content line that starts like a turn (<c>User:</c>, <c>Assistant:</c>, <c>System:</c>,
/// after any backslashes) gets one more backslash in front, so a message cannot forge another turn.
/// </summary>
internal static partial class ChatTemplate
{
    public const string Text = "{system}\\n\\nUser: {user}\\nAssistant: {assistant}\\nUser: {user}\\nAssistant:";

    /// <summary>Stop texts every chat adds to its own: the model starting the next turn ends the reply.</summary>
    public static IReadOnlyList<string> StopTexts { get; } = ["\nUser:", "\nSystem:"];

    /// <summary>The transcript for <paramref name="messages"/> (role, content), ending with the assistant's cue.</summary>
    public static string Format(IEnumerable<(string Role, string Content)> messages)
    {
        var text = new StringBuilder();
        foreach (var (role, content) in messages)
        {
            switch (role)
            {
                case "system" or "developer":
                    text.Append(Escape(content.Trim())).Append("\n\n");
                    break;
                case "user":
                    text.Append("User: ").Append(Escape(content.Trim())).Append('\n');
                    break;
                case "assistant":
                    text.Append("Assistant: ").Append(Escape(content.Trim())).Append('\n');
                    break;
                default:
                    throw new ArgumentException($"messages: role \"{role}\" is not supported (use system, user or assistant).");
            }
        }
        return text.Append("Assistant:").ToString();
    }

    /// <summary>The token ids of the transcript: every message's content as ordinary text (no special tokens).</summary>
    public static int[] Encode(IEnumerable<(string Role, string Content)> messages) =>
        GptSharp.Tokenization.Gpt2Tokenizer.Instance.EncodeOrdinary(Format(messages));

    /// <summary>A backslash before every content line that starts like a turn marker (after its own backslashes).</summary>
    internal static string Escape(string content) => TurnMarker().Replace(content, "\\$0");

    [System.Text.RegularExpressions.GeneratedRegex(@"(?m)^\\*(User|Assistant|System):")]
    private static partial System.Text.RegularExpressions.Regex TurnMarker();

    /// <summary>The stop texts of a chat: the caller's plus <see cref="StopTexts"/>.</summary>
    public static IReadOnlyList<string> WithChatStops(IReadOnlyList<string> stops) => [.. stops, .. StopTexts.Except(stops)];
}

/// <summary>Drops the spaces a reply starts with (the model writes " Hello" after "Assistant:"), across streamed pieces.</summary>
internal sealed class LeadingSpaceTrimmer
{
    private bool _started;

    public string Next(string piece)
    {
        if (_started) return piece;
        string trimmed = piece.TrimStart();
        _started = trimmed.Length > 0;
        return trimmed;
    }
}
