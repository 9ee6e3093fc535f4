using System.CommandLine;
using System.Text;
using GptSharp.Cli;
using GptSharp.Cli.Commands;
using GptSharp.Tokenization;

namespace GptSharp.Tests.Tokenization;

/// <summary><c>gptsharp tokenize</c> and <c>detokenize</c>, run in-process through their command objects with captured output.</summary>
public class TokenizerCliTests
{
    private static (int ExitCode, string Output) Tokenize(params string[] args)
    {
        var output = new StringWriter();
        int exitCode = TokenizeCommand.Create(output).Parse(args).Invoke();
        return (exitCode, output.ToString());
    }

    private static (int ExitCode, byte[] Output) Detokenize(string? stdin, params string[] args)
    {
        var output = new MemoryStream();
        int exitCode = DetokenizeCommand.Create(output, new StringReader(stdin ?? "")).Parse(args).Invoke();
        return (exitCode, output.ToArray());
    }

    private static void AssertWrote(byte[] expected, (int ExitCode, byte[] Output) result)
    {
        Assert.Equal(0, result.ExitCode);
        Assert.Equal(expected, result.Output);
    }

    [Fact]
    public void CommandsAreRegistered()
    {
        var names = Program.BuildRootCommand().Subcommands.Select(c => c.Name).ToList();
        Assert.Contains("tokenize", names);
        Assert.Contains("detokenize", names);
    }

    [Fact]
    public void TokenizeText()
    {
        Assert.Equal((0, "6109 3626 6100 345" + Environment.NewLine), Tokenize("--text", "Every effort moves you"));
        Assert.Equal((0, "[6109,3626,6100,345]" + Environment.NewLine), Tokenize("--text", "Every effort moves you", "--json"));
    }

    [Fact]
    public void AllowSpecialDecidesWhatEndOfTextIs()
    {
        Assert.Equal((0, "[17250,50256]" + Environment.NewLine), Tokenize("--text", "Hi<|endoftext|>", "--json", "--allow-special"));
        // Without --allow-special any text can be tokenized: special-token text is plain text.
        Assert.Equal((0, "[17250,27,91,437,1659,5239,91,29]" + Environment.NewLine), Tokenize("--text", "Hi<|endoftext|>", "--json"));
    }

    [Fact]
    public void TokenizeFileEncodesItsExactBytes()
    {
        string path = Path.Combine(Path.GetTempPath(), $"gptsharp-tokenize-{Guid.NewGuid():N}.txt");
        try
        {
            // A trailing newline and CRLF are part of the text; nothing is stripped.
            string text = "Hello, world.\r\n  Tea? <|endoftext|> 😀\n";
            File.WriteAllBytes(path, Encoding.UTF8.GetBytes(text));
            var expected = string.Join(" ", Gpt2Tokenizer.Instance.Encode(text, Gpt2Tokenizer.AllSpecialTokens)) + Environment.NewLine;
            Assert.Equal((0, expected), Tokenize("--file", path, "--allow-special"));
            expected = string.Join(" ", Gpt2Tokenizer.Instance.EncodeOrdinary(text)) + Environment.NewLine;
            Assert.Equal((0, expected), Tokenize("--file", path));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void NonUtf8FileIsAnErrorNamingTheOffset()
    {
        string path = Path.Combine(Path.GetTempPath(), $"gptsharp-tokenize-{Guid.NewGuid():N}.txt");
        try
        {
            File.WriteAllBytes(path, [.. "caf\u00e9 "u8, 0xC3, 0x28]);
            var error = Assert.Throws<InvalidDataException>(() => TokenizeCommand.Run(null, path, false, false, new StringWriter()));
            Assert.Contains("offset 6", error.Message);
            Assert.Contains(path, error.Message);
            Assert.Equal(1, Tokenize("--file", path).ExitCode);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void TokenizeNeedsExactlyOneInput()
    {
        Assert.Throws<ArgumentException>(() => TokenizeCommand.Run(null, null, false, false, new StringWriter()));
        Assert.Throws<ArgumentException>(() => TokenizeCommand.Run("a", "b", false, false, new StringWriter()));
        Assert.Equal(1, Tokenize().ExitCode);
        Assert.Equal(1, Tokenize("--file", "/no/such/file.txt").ExitCode);
    }

    [Fact]
    public void DetokenizeWritesTheTextWithNoNewline()
    {
        AssertWrote("Every effort moves you"u8.ToArray(), Detokenize(null, "--ids", "[6109, 3626, 6100, 345]"));
        AssertWrote("Every effort moves you"u8.ToArray(), Detokenize("6109 3626\n6100\t345\n"));
        AssertWrote("<|endoftext|>"u8.ToArray(), Detokenize("[50256]"));
        AssertWrote(Array.Empty<byte>(), Detokenize("[]"));
    }

    [Fact]
    public void DetokenizeReplacesPartialCharactersButHexKeepsTheBytes()
    {
        // 47249 = f0 9f 98, the first three bytes of 😀.
        AssertWrote("\uFFFD "u8.ToArray(), Detokenize(null, "--ids", "47249 220"));
        AssertWrote("f09f9820\n"u8.ToArray(), Detokenize(null, "--ids", "47249 220", "--hex"));
        AssertWrote("😀"u8.ToArray(), Detokenize("47249 222"));
    }

    [Theory]
    [InlineData("50257")]
    [InlineData("-1")]
    [InlineData("12 abc")]
    [InlineData("[1, \"a\"]")]
    public void DetokenizeBadIdsFail(string ids)
    {
        var (exitCode, output) = Detokenize(null, "--ids", ids);
        Assert.Equal(1, exitCode);
        Assert.Empty(output);
    }

    [Fact]
    public void DetokenizeErrorNamesTheId()
    {
        var error = Assert.Throws<ArgumentException>(() => DetokenizeCommand.Run("15496 99999", false, new MemoryStream()));
        Assert.Contains("99999", error.Message);
    }
}
