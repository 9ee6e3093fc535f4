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
/// </summary>
public static class ChatTemplate
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
                    text.Append(content.Trim()).Append("\n\n");
                    break;
                case "user":
                    text.Append("User: ").Append(content.Trim()).Append('\n');
                    break;
                case "assistant":
                    text.Append("Assistant: ").Append(content.Trim()).Append('\n');
                    break;
                default:
                    throw new ArgumentException($"messages: role \"{role}\" is not supported (use system, user or assistant).");
            }
        }
        return text.Append("Assistant:").ToString();
    }

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
