using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using GptSharp.Tokenization;

namespace GptSharp.Cli.Commands;

/// <summary><c>gptsharp detokenize [--ids IDS] [--hex]</c>: the text of GPT-2 token ids.</summary>
internal static class DetokenizeCommand
{
    /// <param name="output">Where the bytes go (standard output when null); tests pass a stream.</param>
    /// <param name="input">Where the ids come from without --ids (standard input when null).</param>
    public static Command Create(Stream? output = null, TextReader? input = null)
    {
        var ids = new Option<string>("--ids")
        {
            Description = "Token ids as a JSON array or separated by white space (default: read them from standard input).",
        };
        var hex = new Option<bool>("--hex") { Description = "Print the raw bytes of the tokens as lower-case hex instead of the text." };

        var command = new Command("detokenize", "Write the text of GPT-2 token ids to standard output (UTF-8, no newline added).");
        command.Options.Add(ids);
        command.Options.Add(hex);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            string source = parse.GetValue(ids) ?? (input ?? Console.In).ReadToEnd();
            if (output != null)
            {
                Run(source, parse.GetValue(hex), output);
            }
            else
            {
                using var stdout = Console.OpenStandardOutput();
                Run(source, parse.GetValue(hex), stdout);
            }
            return 0;
        }));
        return command;
    }

    /// <summary>The command's work: parses the ids and writes the decoded text (or its bytes in hex).</summary>
    public static void Run(string idsText, bool hex, Stream output)
    {
        int[] ids = ParseIds(idsText);
        var tokenizer = Gpt2Tokenizer.Instance;
        byte[] bytes = hex
            ? Encoding.ASCII.GetBytes(Convert.ToHexStringLower(tokenizer.DecodeBytes(ids)) + "\n")
            : Encoding.UTF8.GetBytes(tokenizer.Decode(ids)); // ill-formed UTF-8 between tokens becomes U+FFFD, as tiktoken's decode
        output.Write(bytes);
        output.Flush();
    }

    /// <summary>Ids written as a JSON array (<c>[15496, 11]</c>) or separated by white space (<c>15496 11</c>).</summary>
    public static int[] ParseIds(string text)
    {
        string trimmed = text.Trim();
        if (trimmed.StartsWith('['))
        {
            try
            {
                return JsonSerializer.Deserialize(trimmed, CliJsonContext.Default.Int32Array) ?? [];
            }
            catch (JsonException)
            {
                throw new FormatException("The token ids are not a JSON array of integers.");
            }
        }
        var words = trimmed.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        var ids = new int[words.Length];
        for (int i = 0; i < words.Length; i++)
        {
            if (!int.TryParse(words[i], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out ids[i]))
                throw new FormatException($"'{words[i]}' is not a token id: expected integers as a JSON array or separated by white space.");
        }
        return ids;
    }
}
